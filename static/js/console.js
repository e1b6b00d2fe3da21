// Console behaviours declared with data attributes, so that no page needs inline script (the CSP forbids it).
// Listeners sit on the document: they also cover fragments that htmx swaps in later.
(function () {
  "use strict";

  // <select data-autosubmit>: submit its form when the choice changes.
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("[data-autosubmit]") && field.form) {
      field.form.submit();
    }
  });

  // <form data-confirm="question">: ask before submitting.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target.closest
      ? event.target.closest("[data-copy-from], [data-print], [data-reset-form], [data-toggle-open]")
      : null;
    if (!target) {
      return;
    }
    // <button data-copy-from="id" data-copied="Copied">: copy that element's text.
    if (target.hasAttribute("data-copy-from")) {
      var source = document.getElementById(target.getAttribute("data-copy-from"));
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent);
        target.textContent = target.getAttribute("data-copied") || target.textContent;
      }
    }
    // <button data-print>: print the page.
    if (target.hasAttribute("data-print")) {
      window.print();
    }
    // <button data-toggle-open="id" aria-expanded="false">: show or hide that element (its class "is-open"; the
    // stylesheet decides what that means at which width), saying which in aria-expanded.
    if (target.hasAttribute("data-toggle-open")) {
      var panel = document.getElementById(target.getAttribute("data-toggle-open"));
      if (panel) {
        target.setAttribute("aria-expanded", String(panel.classList.toggle("is-open")));
      }
    }
    // <a data-reset-form="id">: reset that form (the link itself still does what it does).
    if (target.hasAttribute("data-reset-form")) {
      var form = document.getElementById(target.getAttribute("data-reset-form"));
      if (form) {
        form.reset();
      }
    }
  });
  // <element data-shown-when="name=value">: shown only while its form's field "name" (radio buttons or a select) has
  // that value; always shown while it holds an error message, so a refused value is never hidden from its owner.
  function applyShownWhen(root) {
    root.querySelectorAll("[data-shown-when]").forEach(function (element) {
      var rule = element.getAttribute("data-shown-when").split("=");
      var form = element.closest("form");
      if (!form) {
        return;
      }
      var chosen = form.querySelector('[name="' + rule[0] + '"]:checked') ||
        form.querySelector('select[name="' + rule[0] + '"]');
      element.hidden = (chosen ? chosen.value : "") !== rule[1] && !element.querySelector(".error");
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.form) {
      applyShownWhen(event.target.form);
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    applyShownWhen(document);
  });
  document.addEventListener("htmx:afterSwap", function () {
    applyShownWhen(document);
  });

  // Escape closes what a data-toggle-open button opened, and gives that button the focus back.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") {
      return;
    }
    document.querySelectorAll("[data-toggle-open][aria-expanded=true]").forEach(function (button) {
      var panel = document.getElementById(button.getAttribute("data-toggle-open"));
      if (panel) {
        panel.classList.remove("is-open");
      }
      button.setAttribute("aria-expanded", "false");
      button.focus();
    });
  });
})();
