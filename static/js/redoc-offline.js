// Loaded before Redoc on /api/docs/ (templates/api/redoc.html). Redoc's sidebar always draws the Redocly logo from
// its CDN, with no option to turn it off; a self-hosted platform asks no other host for anything. An image from
// another origin gets an empty source instead: it fails to load, and Redoc then leaves it out (its onError hides it).
(function () {
  "use strict";

  var EMPTY = "data:,";

  function local(value) {
    try {
      var url = new URL(String(value), document.baseURI);
      return url.origin === window.location.origin || url.protocol === "data:" || url.protocol === "blob:";
    } catch (error) {
      return true; // not a URL the browser would load either
    }
  }

  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLImageElement && String(name).toLowerCase() === "src" && !local(value)) {
      value = EMPTY;
    }
    return setAttribute.call(this, name, value);
  };

  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: src.enumerable,
    get: src.get,
    set: function (value) {
      src.set.call(this, local(value) ? value : EMPTY);
    },
  });
})();
