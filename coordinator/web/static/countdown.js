// Every element with data-deadline shows the time left until it, ticking each second.
(function () {
  function tick() {
    for (const el of document.querySelectorAll("[data-deadline]")) {
      const left = Math.round((Date.parse(el.dataset.deadline) - Date.now()) / 1000);
      const abs = Math.abs(left);
      el.textContent = (left < 0 ? "quá hạn / late " : "còn / left ") +
        Math.floor(abs / 60) + ":" + String(abs % 60).padStart(2, "0");
      el.classList.toggle("late", left < 0);
    }
  }
  window.loaTick = tick;
  tick();
  setInterval(tick, 1000);
})();
