// The bench: keep the scan field focused, turn Enter into "next field" in multi-scan forms,
// refuse a second submit of the same form, and make refusals hard to miss.
(function () {
  "use strict";

  function scanFields(root) {
    return Array.prototype.slice.call((root || document).querySelectorAll("[data-scan-field]"));
  }

  function focusScan() {
    var fields = scanFields();
    if (!fields.length) { return; }
    // Another field the page chose (autofocus) or the user is in keeps the focus.
    var active = document.activeElement;
    if (active && active !== document.body && active.matches("input, select, textarea")) {
      // A scan field the page refilled after a refusal: the next scan replaces its text.
      // Not once a scan has begun to arrive (pageshow comes late on a busy machine): selecting
      // then would let the rest of the code overwrite its first characters.
      if (active.matches("[data-scan-field]") && active.value && active.value === active.defaultValue) {
        active.select();
      }
      return;
    }
    var target = fields.filter(function (f) { return f.hasAttribute("autofocus"); })[0] || fields[0];
    // In a multi-scan form, go to the first empty scan field.
    var empty = fields.filter(function (f) { return !f.value; })[0];
    if (target.form && target.form.hasAttribute("data-scan-sequence") && empty) { target = empty; }
    target.focus();
    target.select();
  }

  // Clicking on the page (not on another control) returns the focus to the scan field.
  document.addEventListener("click", function (event) {
    var control = event.target.closest("input, select, textarea, button, a, label, summary");
    if (!control) { focusScan(); }
  });

  // A scanner types the code and Enter: in a form of several scans, Enter moves on.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") { return; }
    var field = event.target;
    if (!field.matches || !field.matches("[data-scan-field]")) { return; }
    var form = field.form;
    if (!form || !form.hasAttribute("data-scan-sequence")) { return; }
    var inputs = Array.prototype.slice.call(form.querySelectorAll("input:not([type=hidden]), textarea"));
    // An optional field marked data-scan-skip (a position: empty means the next free one)
    // is not waited for: Enter in the last scan submits.
    var next = inputs.slice(inputs.indexOf(field) + 1).filter(function (f) {
      return !f.value && !f.hasAttribute("data-scan-skip");
    })[0];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });

  // One submit per form: a double press or a scanner's double read must not post twice.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitted) {
      event.preventDefault();
      return;
    }
    form.dataset.submitted = "1";
  });

  // Selects that apply at once (the scan mode).
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-submit-on-change]")) { event.target.form.requestSubmit(); }
  });

  function beep() {
    try {
      var Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) { return; }
      var context = new Context();
      var tone = context.createOscillator();
      var gain = context.createGain();
      tone.type = "square";
      tone.frequency.value = 440;
      gain.gain.value = 0.2;
      tone.connect(gain);
      gain.connect(context.destination);
      tone.start();
      tone.stop(context.currentTime + 0.6);
    } catch (ignored) { /* sound is a courtesy; the banner is the message */ }
  }

  // Print buttons (a box map on paper for the freezer door); no inline script under the CSP.
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-print]")) { window.print(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-alert]")) { beep(); }
    focusScan();
    // The page is ready for the scanner (the browser tests wait for this before typing).
    document.documentElement.setAttribute("data-bench-ready", "");
  });
  window.addEventListener("pageshow", focusScan);
})();
