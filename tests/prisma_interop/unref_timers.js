// The WASM engine leaves a 10 s timer running, so every command would linger 10 s after its work.
// Preloaded with `node -r`: long timers no longer keep the process alive (short ones are untouched).
"use strict";
const original = global.setTimeout;
global.setTimeout = function (fn, ms, ...args) {
  const timer = original.call(this, fn, ms, ...args);
  if (typeof ms === "number" && ms >= 10000 && timer && typeof timer.unref === "function") timer.unref();
  return timer;
};
