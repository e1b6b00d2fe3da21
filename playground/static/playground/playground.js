// Playground chat: a WebSocket to /ws/playground/ streams answers token by token.
// Streamed text is only ever inserted as text; when an answer is done the server sends its sanitized HTML.
(function () {
  "use strict";
  var root = document.getElementById("playground");
  if (!root) return;
  var T = JSON.parse(document.getElementById("pg-i18n").textContent);
  var transcript = document.getElementById("pg-transcript");
  var composer = document.getElementById("pg-composer");
  var input = document.getElementById("pg-input");
  var sendBtn = document.getElementById("pg-send");
  var stopBtn = document.getElementById("pg-stop");
  var regenBtn = document.getElementById("pg-regenerate");
  var statusEl = document.getElementById("pg-status");
  var alertEl = document.getElementById("pg-alert");
  var settings = document.getElementById("pg-settings");
  var compareBox = document.getElementById("pg-compare");
  var compareField = document.getElementById("pg-compare-field");
  var laneHeads = document.getElementById("pg-lane-heads");
  var conversationId = root.dataset.conversation || null;
  var socket = null, connected = false, busy = false, retry = 0;
  var lanes = {};  // lane -> {box, body, text}
  var pendingTurn = null;  // the prompt shown before the server accepted it

  function setStatus(text) { statusEl.textContent = text; }
  function refreshButtons() {
    sendBtn.disabled = !connected || busy;
    stopBtn.disabled = !connected || !busy;
    regenBtn.disabled = !connected || busy || !transcript.querySelector(".pg-turn");
  }
  function showAlert(text) { alertEl.textContent = text; alertEl.hidden = !text; }

  function currentSettings() {
    var params = {};
    settings.querySelectorAll("[data-param]").forEach(function (el) {
      if (el.value !== "") params[el.dataset.param] = Number(el.value);
    });
    return {
      conversation: conversationId,
      model: settings.elements.model.value,
      compare_model: compareBox.checked ? settings.elements.compare_model.value : "",
      system: settings.elements.system.value,
      params: params
    };
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function laneCount() { return compareBox.checked ? 2 : 1; }

  function newAnswers(turn, count) {
    var answers = turn.querySelector(".pg-answers");
    answers.textContent = "";
    answers.classList.toggle("pg-two", count === 2);
    lanes = {};
    for (var lane = 0; lane < count; lane++) {
      var box = el("div", "pg-answer");
      box.dataset.lane = String(lane);
      box.appendChild(el("div", "pg-role", ""));
      var body = el("div", "pg-body pg-streaming");
      box.appendChild(body);
      answers.appendChild(box);
      lanes[lane] = {box: box, body: body, text: ""};
    }
  }

  function addTurn(prompt, count) {
    var emptyHint = document.getElementById("pg-empty-hint");
    if (emptyHint) emptyHint.remove();
    var turn = el("div", "pg-turn");
    var p = el("div", "pg-prompt");
    p.appendChild(el("div", "pg-role", T.you));
    p.appendChild(el("div", "pg-text", prompt));
    turn.appendChild(p);
    turn.appendChild(el("div", "pg-answers"));
    transcript.appendChild(turn);
    newAnswers(turn, count);
    pendingTurn = turn;
    turn.scrollIntoView({block: "end"});
  }

  function updateLaneHeads(models) {
    var two = models.length === 2;
    laneHeads.hidden = !two;
    laneHeads.classList.toggle("pg-two", two);
    laneHeads.querySelectorAll(".pg-lane-head").forEach(function (h, i) { h.textContent = models[i] || ""; });
  }

  function start(kind, extra) {
    if (!connected || busy) return;
    showAlert("");
    var payload = Object.assign({type: kind}, currentSettings(), extra || {});
    busy = true;
    refreshButtons();
    setStatus(T.generating);
    socket.send(JSON.stringify(payload));
  }

  function onMessage(msg) {
    var lane = lanes[msg.lane];
    switch (msg.type) {
      case "conversation":
        pendingTurn = null;
        conversationId = msg.id;
        root.dataset.conversation = msg.id;
        if (window.location.pathname !== msg.url) history.replaceState(null, "", msg.url);
        updateLaneHeads(msg.compare ? [settings.elements.model.value, settings.elements.compare_model.value] : []);
        if (window.htmx) htmx.ajax("GET", root.dataset.listUrl + "?current=" + encodeURIComponent(msg.id), {target: "#pg-conversations"});
        break;
      case "start":
        if (lane) lane.box.querySelector(".pg-role").textContent = msg.model;
        break;
      case "waking":
        // The model had scaled to zero: the request waits while an instance starts (the gateway holds it).
        if (lane) { lane.body.textContent = T.waking; lane.body.classList.add("pg-waking"); }
        setStatus(T.waking);
        break;
      case "delta":
        if (lane && lane.body.classList.contains("pg-waking")) {
          lane.body.classList.remove("pg-waking");
          setStatus(T.generating);
        }
        if (lane) { lane.text += msg.text; lane.body.textContent = lane.text; }
        break;
      case "done":
        if (lane) {
          lane.body.classList.remove("pg-streaming");
          lane.body.classList.add("md");
          lane.body.innerHTML = msg.html;  // sanitized on the server (markdown + nh3)
          var old = lane.box.querySelector(".pg-stats");
          if (old) old.remove();
          var stats = document.createElement("div");
          stats.innerHTML = msg.stats_html;  // server-rendered template, values escaped there
          lane.box.appendChild(stats.firstElementChild);
        }
        break;
      case "error":
        if (lane) {
          var err = el("div", "alert alert-error pg-error", msg.message);
          err.setAttribute("role", "alert");
          lane.box.insertBefore(err, lane.body.nextSibling);
        } else {
          showAlert(msg.message);
          if (msg.code !== "busy") {
            busy = false;
            setStatus(T.ready);
            if (pendingTurn) { input.value = pendingTurn.querySelector(".pg-text").textContent; pendingTurn.remove(); pendingTurn = null; }
          }
        }
        break;
      case "idle":
        busy = false;
        setStatus(T.ready);
        break;
    }
    refreshButtons();
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
    socket.addEventListener("open", function () {
      connected = true; retry = 0; setStatus(T.ready); refreshButtons();
    });
    socket.addEventListener("message", function (event) { onMessage(JSON.parse(event.data)); });
    socket.addEventListener("close", function () {
      connected = false;
      if (busy) {
        busy = false;
        Object.keys(lanes).forEach(function (k) { lanes[k].body.classList.remove("pg-streaming"); });
      }
      refreshButtons();
      setStatus(T.reconnecting);
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, 500 * retry);
    });
  }

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text.trim() || !connected || busy) return;
    addTurn(text, laneCount());
    start("send", {content: text});
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  stopBtn.addEventListener("click", function () {
    if (socket && connected) socket.send(JSON.stringify({type: "stop"}));
  });
  regenBtn.addEventListener("click", function () {
    var turns = transcript.querySelectorAll(".pg-turn");
    if (!turns.length || !conversationId) return;
    newAnswers(turns[turns.length - 1], laneCount());
    start("regenerate");
  });
  compareBox.addEventListener("change", function () { compareField.hidden = !compareBox.checked; });

  // "View code": the server builds the snippets from the saved conversation plus the current settings and draft.
  var dialog = document.getElementById("pg-code");
  document.getElementById("pg-code-open").addEventListener("click", function () {
    var s = currentSettings();
    var query = new URLSearchParams({model: s.model, system: s.system, content: input.value});
    if (conversationId) query.set("conversation", conversationId);
    Object.keys(s.params).forEach(function (k) { query.set(k, s.params[k]); });
    fetch(root.dataset.codeUrl + "?" + query.toString(), {headers: {"HX-Request": "true"}, credentials: "same-origin"})
      .then(function (r) { return r.text(); })
      .then(function (html) {
        document.getElementById("pg-code-body").innerHTML = html;  // server-rendered, escaped template
        dialog.showModal();
      });
  });
  document.getElementById("pg-code-close").addEventListener("click", function () { dialog.close(); });

  refreshButtons();
  connect();
})();
