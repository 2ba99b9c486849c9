// ExecOps pages: live updates and keyboard shortcuts. Every page works without this file;
// it only makes them quicker.
(function () {
  "use strict";
  var list = document.getElementById("list");
  if (!list) return;
  var current = 0;

  function cards() {
    return Array.prototype.slice.call(list.querySelectorAll("article.card"));
  }

  function focus(index) {
    var all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach(function (card) { card.classList.remove("focused"); });
    all[current].classList.add("focused");
    all[current].scrollIntoView({ block: "nearest" });
  }

  function refresh() {
    return fetch(window.location.href, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        list.innerHTML = html;
        // New forms need htmx's handlers too.
        if (window.htmx) window.htmx.process(list);
        focus(current);
      });
  }

  if (window.EventSource) {
    var stream = new EventSource("/inbox/stream");
    stream.addEventListener("proposals", refresh);
    // Over the server's bound on open pages: no live updates, and the page says so.
    stream.addEventListener("paused", function (event) {
      stream.close();
      document.body.dataset.live = "0";
      var note = document.getElementById("live-note");
      if (note) {
        note.textContent = event.data;
        note.hidden = false;
      }
    });
    // What changed between the page being rendered and the stream opening (or reopening)
    // sent no event: catch up, then say the list is live.
    stream.addEventListener("open", function () {
      // A failed refresh leaves the list as it was; the next change refreshes it again.
      refresh()
        .catch(function () {})
        .then(function () {
          // A stream closed meanwhile (paused: too many pages) is not live.
          if (stream.readyState !== EventSource.CLOSED) document.body.dataset.live = "1";
        });
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.matches("input, textarea, select")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    var card = cards()[current];
    if (event.key === "j") {
      focus(current + 1);
    } else if (event.key === "k") {
      focus(current - 1);
    } else if (event.key === "a" && card) {
      var approve = card.querySelector('form[action$="/approve"]');
      if (approve) approve.requestSubmit();
    } else if (event.key === "r" && card) {
      var reason = card.querySelector('form[action$="/reject"] input[name="reason"]');
      if (reason) {
        event.preventDefault();
        reason.focus();
      }
    } else if (event.key === "?") {
      var help = document.getElementById("help");
      if (help) help.hidden = !help.hidden;
    }
  });

  focus(0);
})();
