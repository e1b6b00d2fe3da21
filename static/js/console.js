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
    var target = event.target.closest ? event.target.closest("[data-copy-from], [data-print], [data-reset-form]") : null;
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
    // <a data-reset-form="id">: reset that form (the link itself still does what it does).
    if (target.hasAttribute("data-reset-form")) {
      var form = document.getElementById(target.getAttribute("data-reset-form"));
      if (form) {
        form.reset();
      }
    }
  });
})();
