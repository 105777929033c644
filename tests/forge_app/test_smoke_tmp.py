def test_smoke(app, world, client_as, set_url):
    c = client_as("editor")
    for url in ["/projects/", f"/projects/{world.project_id}", set_url, f"{set_url}/prompts/new", "/orgs/", "/forges/", f"/projects/{world.project_id}/audit", f"/projects/{world.project_id}/search?q=x", f"/projects/{world.project_id}/settings", f"{set_url}/versions", f"{set_url}/diff", f"{set_url}/import", f"{set_url}/settings", "/account"]:
        r = c.get(url)
        print(url, r.status_code)
        assert r.status_code == 200, r.data.decode()[:3000]
    r = c.post(f"{set_url}/prompts/new", data={"key": "welcome.message", "kind": "text", "template": "Hi {{ name }}", "action": "save", "description": "Greets"})
    assert r.status_code == 302, r.data.decode()[:3000]
    r = c.get(r.headers["Location"]); assert r.status_code == 200
    r = c.post(f"{set_url}/submit", data={"bump": "minor", "changelog": "first", "revision": "2"})
    print(r.status_code, r.headers.get("Location"))
    r2 = client_as("reviewer")
    page = r2.get(f"{set_url}/review"); assert page.status_code == 200, page.data.decode()[:2000]
    import re
    rev = re.search(r'name="revision" value="(\d+)"', page.data.decode()).group(1)
    r = r2.post(f"{set_url}/approve", data={"revision": rev})
    print(r.status_code, r.headers.get("Location"))
    r = r2.get(r.headers["Location"]); assert r.status_code == 200, r.data.decode()[:3000]
    for url in [f"{set_url}/versions", f"{set_url}/diff", f"{set_url}/versions/0.1.0/export", f"{set_url}/versions/0.1.0/bundle.json", set_url, f"{set_url}/prompts/welcome.message"]:
        r = r2.get(url); print(url, r.status_code); assert r.status_code == 200, r.data.decode()[:3000]
    print(r2.get(f"{set_url}/versions/0.1.0/bundle.json").data)
