// The card form of a pending top-up: Stripe's Payment Element for the PaymentIntent whose key and client secret the
// page carries in json_script elements.
(function () {
  "use strict";
  var form = document.getElementById("payment-form");
  if (!form || typeof Stripe === "undefined") {
    return;
  }
  var stripe = Stripe(JSON.parse(document.getElementById("stripe-pk").textContent));
  var elements = stripe.elements({clientSecret: JSON.parse(document.getElementById("stripe-cs").textContent)});
  var payment = elements.create("payment");
  payment.mount("#payment-element");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    document.getElementById("pay").disabled = true;
    stripe.confirmPayment({elements: elements, confirmParams: {return_url: window.location.href}}).then(function (result) {
      if (result.error) {
        document.getElementById("payment-message").textContent = result.error.message;
        document.getElementById("pay").disabled = false;
      }
    });
  });
})();
