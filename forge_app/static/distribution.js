/* Anvil FORGE — ACCESS_TOKEN display: mask the token, Show/Hide it, copy it to the clipboard.
   Without JavaScript the token stays visible as plain text and can be selected by hand. */
(function () {
  "use strict";

  function setUp(box) {
    var input = box.querySelector("[data-token-value]");
    var toggle = box.querySelector("[data-token-toggle]");
    var copy = box.querySelector("[data-token-copy]");
    var note = box.querySelector("[data-token-copied]");
    if (!input) return;

    input.type = "password";
    if (toggle) {
      toggle.hidden = false;
      toggle.setAttribute("aria-pressed", "false");
      toggle.addEventListener("click", function () {
        var shown = input.type === "text";
        input.type = shown ? "password" : "text";
        toggle.textContent = shown ? "Show" : "Hide";
        toggle.setAttribute("aria-pressed", shown ? "false" : "true");
      });
    }
    if (copy) {
      copy.hidden = false;
      copy.addEventListener("click", function () {
        var done = function () { if (note) note.textContent = "Copied to the clipboard."; };
        var fallback = function () {
          var wasType = input.type;
          input.type = "text";
          input.select();
          try {
            document.execCommand("copy");
            done();
          } catch (e) {
            if (note) note.textContent = "Select the token and copy it by hand.";
          }
          input.type = wasType;
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(input.value).then(done, fallback);
        } else {
          fallback();
        }
      });
    }
  }

  window.AnvilForge.ready(function () {
    document.querySelectorAll("[data-token-secret]").forEach(setUp);
  });
})();
