/* Anvil FORGE — small conveniences on top of pages that work without JavaScript:
   unsaved-change warnings, Ctrl/Cmd+S, one submission per form, the live preview of the prompt editor. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";

  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  // The parts of a widget, found by data attribute under `root`: parts(form, ["samples",
  // "previewState"]) is { samples: [data-samples], previewState: [data-preview-state] }
  // (the names element.dataset uses), null where a part is missing.
  function parts(root, names) {
    var found = {};
    names.forEach(function (name) {
      var attribute = "data-" + name.replace(/[A-Z]/g, function (c) { return "-" + c.toLowerCase(); });
      found[name] = root.querySelector("[" + attribute + "]");
    });
    return found;
  }

  // For the page scripts loaded after this one (live-status.js, distribution.js).
  window.AnvilForge = { ready: ready, parts: parts };

  ready(function () {
    // Confirmations are pages (one pattern, see presentation.confirm_page): no window.confirm.

    // One submission per form: a double-click must not publish, approve, roll back or
    // generate a token twice.
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (event.defaultPrevented || !(form instanceof HTMLFormElement)) return;
      if ((form.getAttribute("method") || "get").toLowerCase() !== "post") return;
      if (form.hasAttribute("data-submitting")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-submitting", "");
      form.setAttribute("aria-busy", "true");
    });
    // A page shown again by the Back button may be submitted again.
    window.addEventListener("pageshow", function () {
      document.querySelectorAll("form[data-submitting]").forEach(function (form) {
        form.removeAttribute("data-submitting");
        form.removeAttribute("aria-busy");
      });
    });

    // Never lose work: warn before leaving a form with unsaved changes.
    var dirtyForms = new Set();
    document.querySelectorAll("form[data-guard]").forEach(function (form) {
      var note = form.querySelector("[data-dirty-note]");
      var mark = function () {
        dirtyForms.add(form);
        if (note) note.hidden = false;
      };
      form.addEventListener("input", mark);
      form.addEventListener("change", mark);
      form.addEventListener("submit", function () { dirtyForms.delete(form); });
      form.addEventListener("forge:dirty", mark);
    });
    window.addEventListener("beforeunload", function (event) {
      if (dirtyForms.size > 0) {
        event.preventDefault();
        event.returnValue = "";
      }
    });

    // Ctrl/Cmd+S saves the page's main form; "/" jumps to search.
    document.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "s") {
        var form = document.querySelector("form[data-save-shortcut]");
        if (form) {
          event.preventDefault();
          var button = form.querySelector("[data-save]") || form.querySelector('button[type="submit"]:not([name])');
          if (form.requestSubmit) form.requestSubmit(button || undefined); else form.submit();
        }
        return;
      }
      if (event.key === "/" && !event.ctrlKey && !event.metaKey) {
        var target = event.target;
        var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable);
        var search = document.querySelector("[data-shortcut-focus='/']");
        if (!typing && search) {
          event.preventDefault();
          search.focus();
        }
      }
    });

    // A table wider than the screen scrolls inside its frame: keyboard users reach the
    // scrolling with the frame in the tab order, named for screen readers (axe:
    // scrollable-region-focusable).
    function markScrollableTables() {
      document.querySelectorAll(".table-wrap").forEach(function (wrap) {
        if (wrap.scrollWidth > wrap.clientWidth + 1) {
          wrap.setAttribute("tabindex", "0");
          wrap.setAttribute("role", "region");
          if (!wrap.hasAttribute("aria-label")) wrap.setAttribute("aria-label", "Table (scrolls sideways)");
        } else if (wrap.getAttribute("role") === "region") {
          wrap.removeAttribute("tabindex");
          wrap.removeAttribute("role");
          wrap.removeAttribute("aria-label");
        }
      });
    }
    markScrollableTables();
    window.addEventListener("resize", markScrollableTables);

    var editor = document.getElementById("editor");
    if (editor) setUpEditor(editor);
    document.querySelectorAll("form[data-backup]").forEach(setUpBackup);
  });

  // Never lose work, even to a crash or an expired session: the editor's fields are copied to
  // this browser's storage as they change, and offered back when the page opens again with
  // different content. A successful save (a success message on the page) clears the copy.
  function setUpBackup(form) {
    var key = "forge-backup:" + window.location.pathname;
    var storage;
    try { storage = window.localStorage; } catch (e) { return; }
    if (!storage) return;
    function fields() {
      var values = {};
      Array.prototype.forEach.call(form.elements, function (el) {
        if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button" || el.type === "file") return;
        if ((el.type === "radio" || el.type === "checkbox") && !el.checked) return;
        values[el.name] = el.value;
      });
      return values;
    }
    function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }
    if (document.querySelector(".flash-success")) {
      storage.removeItem(key);
      var submitted = window.sessionStorage && window.sessionStorage.getItem("forge-submitted");
      if (submitted) storage.removeItem(submitted);
    }
    if (window.sessionStorage) window.sessionStorage.removeItem("forge-submitted");
    form.addEventListener("submit", function () {
      if (window.sessionStorage) window.sessionStorage.setItem("forge-submitted", key);
    });
    var saved = null;
    try { saved = JSON.parse(storage.getItem(key) || "null"); } catch (e) { saved = null; }
    if (saved && saved.values && !same(saved.values, fields())) {
      var banner = document.createElement("div");
      banner.className = "flash flash-warning backup-banner";
      banner.setAttribute("role", "alert");
      var when = new Date(saved.at);
      banner.appendChild(document.createTextNode("This browser kept changes you did not save (" + when.toLocaleString() + "). "));
      var restore = document.createElement("button");
      restore.type = "button";
      restore.className = "button small";
      restore.textContent = "Restore them";
      var discard = document.createElement("button");
      discard.type = "button";
      discard.className = "button small quiet";
      discard.textContent = "Discard";
      banner.appendChild(restore);
      banner.appendChild(discard);
      form.parentNode.insertBefore(banner, form);
      restore.addEventListener("click", function () {
        restoreFields(form, saved.values);
        banner.remove();
        form.dispatchEvent(new Event("forge:dirty"));
        form.dispatchEvent(new Event("forge:restored"));
      });
      discard.addEventListener("click", function () { storage.removeItem(key); banner.remove(); });
    }
    var timer = null;
    form.addEventListener("input", function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(function () {
        try { storage.setItem(key, JSON.stringify({ at: Date.now(), values: fields() })); } catch (e) { /* full: nothing to do */ }
      }, 400);
    });
  }

  function restoreFields(form, values) {
    var messages = form.querySelector("#messages");
    var addButton = form.querySelector("[data-add-message]");
    Object.keys(values).forEach(function (name) {
      var match = /^messages-(\d+)-/.exec(name);
      if (match && messages && addButton) {
        while (messages.querySelectorAll("[data-message-row]").length <= parseInt(match[1], 10)) addButton.click();
      }
    });
    Object.keys(values).forEach(function (name) {
      var els = form.querySelectorAll('[name="' + name.replace(/"/g, "") + '"]');
      els.forEach(function (el) {
        if (el.type === "radio" || el.type === "checkbox") el.checked = el.value === values[name];
        else el.value = values[name];
      });
    });
    form.querySelectorAll("input, select, textarea").forEach(function (el) {
      el.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  function setUpEditor(form) {
    var fieldset = form.querySelector("fieldset.editor-main");
    var readOnly = fieldset && fieldset.disabled;
    var panels = form.querySelectorAll(".kind-panel");
    var messages = document.getElementById("messages");
    var part = parts(form, ["samples", "preview", "previewState", "previewButton"]);
    if (part.previewButton) part.previewButton.hidden = true; // the preview updates by itself

    function kind() {
      var checked = form.querySelector('input[name="kind"]:checked');
      return checked ? checked.value : "text";
    }
    form.addEventListener("forge:restored", function () { showKind(); schedulePreview(); });
    function showKind() {
      panels.forEach(function (panel) {
        if (panel.getAttribute("data-kind") === kind()) panel.removeAttribute("data-inactive");
        else panel.setAttribute("data-inactive", "");
      });
    }
    form.querySelectorAll('input[name="kind"]').forEach(function (radio) {
      radio.addEventListener("change", function () { showKind(); schedulePreview(); });
    });
    showKind();

    function renumber() {
      messages.querySelectorAll("[data-message-row]").forEach(function (row, index) {
        row.querySelectorAll("select, textarea, label").forEach(function (el) {
          ["id", "name", "for"].forEach(function (attr) {
            var value = el.getAttribute(attr);
            if (value) el.setAttribute(attr, value.replace(/messages-\d+-/, "messages-" + index + "-"));
          });
          var label = el.getAttribute("data-message-label");
          if (label) el.textContent = label + " " + (index + 1);
        });
      });
    }
    var addButton = form.querySelector("[data-add-message]");
    if (addButton && messages) {
      addButton.addEventListener("click", function (event) {
        event.preventDefault();
        var rows = messages.querySelectorAll("[data-message-row]");
        var last = rows[rows.length - 1];
        var clone = last.cloneNode(true);
        clone.classList.remove("has-error");
        clone.querySelectorAll(".error-text").forEach(function (el) { el.remove(); });
        clone.querySelector("textarea").value = "";
        var lastRole = last.querySelector("select").value;
        clone.querySelector("select").value = lastRole === "user" ? "assistant" : "user";
        messages.appendChild(clone);
        renumber();
        clone.querySelector("textarea").focus();
        form.dispatchEvent(new Event("forge:dirty"));
        schedulePreview();
      });
    }
    if (messages) {
      messages.addEventListener("click", function (event) {
        var button = event.target.closest("[data-remove-message]");
        if (!button) return;
        var rows = messages.querySelectorAll("[data-message-row]");
        var row = button.closest("[data-message-row]");
        if (rows.length > 1) row.remove(); else row.querySelector("textarea").value = "";
        renumber();
        form.dispatchEvent(new Event("forge:dirty"));
        schedulePreview();
      });
    }

    // "Line 3" links in error messages put the cursor on that line.
    form.addEventListener("click", function (event) {
      var link = event.target.closest("[data-goto-line]");
      if (!link) return;
      event.preventDefault();
      goToLine(document.getElementById(link.getAttribute("data-goto-field")), parseInt(link.getAttribute("data-goto-line"), 10));
    });

    function collect() {
      var data = { key: form.elements.key ? form.elements.key.value : "", kind: kind(), template: "", messages: [], samples: {} };
      if (form.elements.template) data.template = form.elements.template.value;
      if (messages) {
        messages.querySelectorAll("[data-message-row]").forEach(function (row) {
          data.messages.push({ role: row.querySelector("select").value, template: row.querySelector("textarea").value });
        });
        data.messages = data.messages.filter(function (m) { return m.template.trim() !== ""; });
      }
      part.samples.querySelectorAll("[data-sample]").forEach(function (input) {
        data.samples[input.getAttribute("data-sample")] = input.value;
      });
      return data;
    }

    var timer = null;
    var sequence = 0;
    function schedulePreview() {
      if (timer) clearTimeout(timer);
      form.classList.add("is-stale");
      timer = setTimeout(runPreview, 300);
    }
    function runPreview() {
      var url = form.getAttribute("data-preview-url");
      var mine = ++sequence;
      if (part.previewState) part.previewState.textContent = "updating…";
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": CSRF, "Accept": "application/json" },
        body: JSON.stringify(collect())
      }).then(function (response) {
        if (!response.ok) throw new Error("The preview is not available right now (" + response.status + ").");
        return response.json();
      }).then(function (result) {
        if (mine !== sequence) return; // a newer request is on its way
        // After a syntax error the variables are unknown: keep the sample fields (and values).
        if (result.ok) renderSamples(result.variables || []);
        renderPreview(result);
        if (part.previewState) part.previewState.textContent = "";
        form.classList.remove("is-stale");
      }).catch(function (error) {
        if (mine !== sequence) return;
        if (part.previewState) part.previewState.textContent = error.message;
      });
    }

    function renderSamples(variables) {
      var existing = {};
      part.samples.querySelectorAll("[data-sample]").forEach(function (input) {
        existing[input.getAttribute("data-sample")] = input.closest(".sample");
      });
      var same = Object.keys(existing).join("\u0000") === variables.join("\u0000");
      if (same) return;
      var empty = part.samples.querySelector("[data-no-variables]");
      var fragment = document.createDocumentFragment();
      variables.forEach(function (name) {
        var wrapper = existing[name];
        if (!wrapper) {
          wrapper = document.createElement("div");
          wrapper.className = "field sample";
          var label = document.createElement("label");
          label.className = "mono";
          label.setAttribute("for", "sample-" + name);
          label.textContent = name;
          var input = document.createElement("input");
          input.id = "sample-" + name;
          input.name = "sample-" + name;
          input.setAttribute("data-sample", name);
          input.setAttribute("autocomplete", "off");
          wrapper.appendChild(label);
          wrapper.appendChild(input);
        }
        fragment.appendChild(wrapper);
      });
      part.samples.textContent = "";
      if (variables.length === 0) {
        var none = empty || document.createElement("p");
        none.className = "muted small";
        none.setAttribute("data-no-variables", "");
        none.textContent = "No variables.";
        part.samples.appendChild(none);
      }
      part.samples.appendChild(fragment);
    }

    function renderPreview(result) {
      part.preview.textContent = "";
      if (!result.ok) {
        result.problems.forEach(function (problem) {
          var p = document.createElement("p");
          p.className = "error-text";
          if (problem.line) {
            var link = document.createElement("a");
            link.href = "#" + problem.field;
            link.className = "goto-line";
            link.setAttribute("data-goto-field", problem.field);
            link.setAttribute("data-goto-line", String(problem.line));
            link.textContent = "Line " + problem.line;
            p.appendChild(link);
            p.appendChild(document.createTextNode(": " + problem.message));
          } else {
            p.textContent = problem.message;
          }
          part.preview.appendChild(p);
        });
        return;
      }
      if (result.messages.length === 0) {
        var hint0 = document.createElement("p");
        hint0.className = "hint";
        hint0.textContent = "The preview appears here as you write the template.";
        part.preview.appendChild(hint0);
      }
      result.messages.forEach(function (message) {
        var box = document.createElement("div");
        box.className = "preview-message";
        var role = document.createElement("div");
        role.className = "message-role role-" + message.role;
        role.textContent = message.role;
        var pre = document.createElement("pre");
        pre.textContent = message.content;
        box.appendChild(role);
        box.appendChild(pre);
        part.preview.appendChild(box);
      });
      if (result.missing && result.missing.length) {
        var hint = document.createElement("p");
        hint.className = "hint";
        hint.textContent = "Shown as ⟨name⟩ (empty in conditions, loops and filters) until you give a sample value: " + result.missing.join(", ");
        part.preview.appendChild(hint);
      }
    }

    if (!readOnly) {
      // A problem shown by the server is about the text as it was saved: once the field is
      // edited, fade it (the live preview reports template problems as they are now).
      form.addEventListener("input", function (event) {
        var field = event.target.closest(".field, .message-row");
        if (field) field.querySelectorAll(".error-text").forEach(function (el) { el.classList.add("is-stale-error"); });
      });
      form.addEventListener("input", function (event) {
        if (event.target.matches("[data-template], [data-sample], #key")) schedulePreview();
      });
      form.addEventListener("change", function (event) {
        if (event.target.matches("select")) schedulePreview();
      });
    } else {
      // Read-only: a viewer may still try sample values (nothing is stored).
      form.addEventListener("input", function (event) {
        if (event.target.matches("[data-sample]")) schedulePreview();
      });
    }
  }

  function goToLine(textarea, line) {
    if (!textarea || !line) return;
    var lines = textarea.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    var end = start + (lines[line - 1] || "").length;
    textarea.focus();
    textarea.setSelectionRange(start, end);
    var lineHeight = parseFloat(window.getComputedStyle(textarea).lineHeight) || 20;
    textarea.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }
})();
