// ipywidgets 8's widgets typeset their labels through MathJax 2's API,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the site serves MathJax 3, which has no Hub.
// This gives MathJax 3 that one call: before MathJax has started, the elements wait for it.
(function () {
  const waiting = [];
  const typeset = (elements) => {
    const mathjax = window.MathJax;
    if (mathjax && mathjax.typesetPromise && elements.length) {
      mathjax.typesetPromise(elements).catch((error) => console.warn("MathJax:", error));
    }
  };
  const hub = {
    Queue(...calls) {
      const elements = calls.filter((call) => Array.isArray(call) && call[2]).map((call) => call[2]);
      if (window.MathJax && window.MathJax.typesetPromise) typeset(elements);
      else waiting.push(...elements);
    },
  };
  const config = (window.MathJax = window.MathJax || {});
  config.Hub = hub;
  config.startup = Object.assign(config.startup || {}, {
    ready() {
      window.MathJax.startup.defaultReady();
      window.MathJax.Hub = hub;
      window.MathJax.startup.promise.then(() => typeset(waiting.splice(0)));
    },
  });
})();
