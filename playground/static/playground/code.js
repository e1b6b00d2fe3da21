// "View code": switching between the curl / Python / JavaScript tabs and copying a snippet.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var tab = event.target.closest(".pg-tabs [data-tab]");
    if (tab) {
      var box = tab.closest(".pg-code");
      box.querySelectorAll("[data-tab]").forEach(function (t) { t.setAttribute("aria-selected", String(t === tab)); });
      box.querySelectorAll("[data-snippet]").forEach(function (s) { s.hidden = s.dataset.snippet !== tab.dataset.tab; });
      return;
    }
    var copy = event.target.closest(".pg-copy");
    if (copy) {
      var text = copy.parentElement.querySelector("code").textContent;
      var done = function () {
        var label = copy.textContent;
        copy.textContent = copy.dataset.copied;
        setTimeout(function () { copy.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
        done();
      }
    }
  });
})();
