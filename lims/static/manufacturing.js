// New product lot: apheresis collections are scanned into a visible list.
// Enter in the scan field adds the code and submits nothing; the list is written, one code per
// line, into the form's textarea, which is what the form posts (and what works without
// JavaScript, where the scan field stays hidden and the textarea is used directly).
(function () {
  "use strict";

  function setUp(form) {
    var enhanced = form.querySelector("[data-scan-enhanced]");
    var plain = form.querySelector("[data-scan-plain]");
    var textarea = plain && plain.querySelector("textarea");
    if (!enhanced || !textarea) {
      return;
    }
    var scan = enhanced.querySelector("[data-scan-field]");
    var list = enhanced.querySelector("[data-scan-list]");
    var empty = enhanced.querySelector("[data-scan-empty]");
    var message = enhanced.querySelector("[data-scan-message]");
    var codes = [];

    function add(text) {
      var code = text.trim();
      if (!code) {
        return false;
      }
      var key = code.toUpperCase();
      for (var i = 0; i < codes.length; i += 1) {
        if (codes[i].toUpperCase() === key) {
          message.textContent = code + " is in the list already.";
          return false;
        }
      }
      codes.push(code);
      message.textContent = "";
      return true;
    }

    function render() {
      list.textContent = "";
      codes.forEach(function (code, index) {
        var item = document.createElement("li");
        var shown = document.createElement("code");
        shown.textContent = code;
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "danger";
        remove.textContent = "Remove";
        remove.setAttribute("data-index", String(index));
        remove.setAttribute("aria-label", "Remove " + code);
        item.appendChild(shown);
        item.appendChild(remove);
        list.appendChild(item);
      });
      empty.hidden = codes.length > 0;
      textarea.value = codes.join("\n");
    }

    // What the server sent back (after a refused submit) is the starting list.
    textarea.value.split(/\r?\n/).forEach(add);
    message.textContent = "";

    scan.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
      if (add(scan.value)) {
        render();
      }
      scan.value = "";
    });

    list.addEventListener("click", function (event) {
      var target = event.target;
      if (!(target instanceof HTMLElement) || !target.hasAttribute("data-index")) {
        return;
      }
      codes.splice(Number(target.getAttribute("data-index")), 1);
      render();
      scan.focus();
    });

    plain.hidden = true;
    enhanced.hidden = false;
    render();
  }

  document.querySelectorAll("form[data-scan-list-form]").forEach(setUp);
})();
