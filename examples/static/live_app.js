// The example app's page updates itself in place: every few seconds it reads /state.json
// (what examples/live_app.py renders into the page) and rebuilds the parts that changed,
// with textContent only. No reload, so the reading position and focus stay where they are.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh")) || 2;
  var shown = {};

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== "" && attrs[name] != null) node.setAttribute(name, attrs[name]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function replace(id, nodes) {
    var target = document.getElementById(id);
    while (target.firstChild) target.removeChild(target.firstChild);
    nodes.forEach(function (node) { target.appendChild(node); });
  }

  function facts(state) {
    var nodes = [];
    state.facts.forEach(function (fact) {
      nodes.push(el("dt", {}, [fact.label]));
      nodes.push(el("dd", { "class": fact.css }, [fact.value]));
    });
    return nodes;
  }

  function sets(state) {
    if (!state.sets.length) return [el("li", {}, ["nothing served yet"])];
    return state.sets.map(function (set) {
      return el("li", { "data-set": set.id }, [
        el("strong", {}, [set.name]), " ", el("code", {}, [set.version]),
        " (" + set.prompts + " prompts)"
      ]);
    });
  }

  function figure(prompt) {
    var kind = prompt.kind === "chat" ? "chat prompt" : "text prompt";
    var children = [el("figcaption", {}, [
      el("code", {}, [prompt.id]), " ", el("span", { "class": "kind" }, [kind])
    ])];
    if (prompt.error) {
      children.push(el("pre", { "class": "bad" }, [prompt.error]));
    } else if (prompt.messages) {
      prompt.messages.forEach(function (message) {
        children.push(el("div", { "class": "role" }, [message.role]));
        children.push(el("pre", {}, [message.content]));
      });
    } else {
      children.push(el("pre", {}, [prompt.text]));
    }
    return el("figure", { "class": "card", "data-prompt": prompt.id }, children);
  }

  function groups(state) {
    return state.groups.map(function (group) {
      var version = group.version
        ? el("code", {}, [group.version])
        : el("span", { "class": "muted" }, ["not served"]);
      return el("section", { "class": "set", "data-set-name": group.name },
        [el("h3", {}, [group.name, " ", version])].concat(group.prompts.map(figure)));
    });
  }

  function others(state) {
    if (!state.others.length) return [];
    var nodes = ["Also served (this app does not use them): "];
    state.others.forEach(function (id, index) {
      if (index) nodes.push(", ");
      nodes.push(el("code", {}, [id]));
    });
    return nodes;
  }

  var parts = { facts: facts, sets: sets, groups: groups, others: others };

  function show(state) {
    var version = state.version || "nothing yet";
    if (document.getElementById("version").textContent !== version) {
      document.getElementById("version").textContent = version;
      document.title = "Example app · " + version;
    }
    Object.keys(parts).forEach(function (id) {
      var key = JSON.stringify(id === "facts" ? state.facts : state[id]);
      if (shown[id] !== key) {
        shown[id] = key;
        replace(id, parts[id](state));
      }
    });
  }

  function connection(text) {
    document.getElementById("connection").textContent = text;
  }

  function poll() {
    fetch("/state.json", { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (state) { show(state); connection(""); })
      .catch(function () { connection("(the example app does not answer; retrying)"); })
      .then(function () { window.setTimeout(poll, seconds * 1000); });
  }

  window.setTimeout(poll, seconds * 1000);
})();
