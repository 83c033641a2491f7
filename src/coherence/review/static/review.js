// Keyboard shortcuts of the rating page (no build step, no dependency).
// The blind A/B pairs come first; the labelled answers and the questions show once they are picked.
// j/k or arrows: next/previous item; y/n/u: answer a question; a/b/s: pick in an A/B pair;
// c: comment; Ctrl+Enter: save; on the triplet list, n opens the next unrated triplet.
(function () {
  "use strict";
  function ready(fn) { if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn); }
  ready(function () {
    var form = document.getElementById("rating");
    var next = document.getElementById("next");
    if (!form) {
      if (next) document.addEventListener("keydown", function (e) {
        if (e.key === "n" && !e.ctrlKey && !e.metaKey && !e.altKey) { window.location = next.href; }
      });
      return;
    }
    var items = Array.prototype.slice.call(form.querySelectorAll("fieldset.item[data-item]"));
    var pairs = items.filter(function (el) { return el.classList.contains("pair"); });
    var reveal = document.getElementById("reveal");
    var current = 0;
    // Blind A/B: the labelled r+ / r- and the questions stay hidden until every pair is picked.
    function picked() { return pairs.every(function (el) { return el.querySelector("input[type=radio]:checked"); }); }
    function updateReveal() { if (reveal) reveal.classList.toggle("blind", !picked()); }
    function visible() { return picked() ? items.length : pairs.length; }
    function firstOpen() {
      for (var i = 0; i < items.length; i++) { if (!items[i].querySelector("input[type=radio]:checked")) return i; }
      return items.length - 1;
    }
    function focus(i) {
      current = Math.max(0, Math.min(visible() - 1, i));
      items.forEach(function (el, k) { el.classList.toggle("current", k === current); });
      items[current].scrollIntoView({ block: "nearest" });
    }
    function choose(value) {
      var item = items[current];
      var input = item.querySelector("input[type=radio][value='" + value + "']");
      if (!input) return false;
      input.checked = true;
      updateReveal();
      focus(current + 1);
      return true;
    }
    var answerKeys = { y: "yes", n: "no", u: "unsure" };
    var pickKeys = { a: "A", b: "B", s: "same" };
    document.addEventListener("keydown", function (e) {
      var typing = e.target && (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT" && e.target.type !== "radio");
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); return; }
      if (typing) { if (e.key === "Escape") e.target.blur(); return; }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      var kind = items[current].classList.contains("pair") ? pickKeys : answerKeys;
      if (e.key === "j" || e.key === "ArrowDown") { focus(current + 1); e.preventDefault(); }
      else if (e.key === "k" || e.key === "ArrowUp") { focus(current - 1); e.preventDefault(); }
      else if (e.key === "c") { document.getElementById("comment").focus(); e.preventDefault(); }
      else if (kind[e.key] && choose(kind[e.key])) { e.preventDefault(); }
    });
    items.forEach(function (el, k) {
      el.addEventListener("click", function () { focus(k); });
      el.addEventListener("change", function () { updateReveal(); });
    });
    updateReveal();
    focus(firstOpen());
  });
})();
