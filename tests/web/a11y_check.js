// The accessibility basics every page must pass (run by test_browser.check_page).
() => {
  const problems = [];
  if (!document.documentElement.getAttribute('lang')) problems.push('html has no lang');
  const headings = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')];
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  let previous = 0;
  for (const h of headings) {
    const level = Number(h.tagName[1]);
    if (previous === 0 && level !== 1) problems.push('first heading is ' + h.tagName);
    if (previous && level > previous + 1) problems.push('skipped to ' + h.tagName + ': ' + h.textContent.trim());
    previous = level;
  }
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('field without label: ' + (el.name || el.id));
  }
  const rgb = (text) => (text.match(/[\d.]+/g) || []).map(Number);
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const selector = 'p, a, button, label, legend, th, td, dt, dd, li, h1, h2, h3, caption, .badge, .hint';
  for (const el of document.querySelectorAll(selector)) {
    if (!el.offsetParent || !el.textContent.trim() || el.classList.contains('skip-link')) continue;
    const fg = luminance(rgb(getComputedStyle(el).color).slice(0, 3));
    const bg = luminance(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ': ' + el.textContent.trim().slice(0, 40));
  }
  return problems;
}
