// vel console: live updates over the API's event streams. Pages work
// without it; with it, parts marked data-live-src refresh when their
// object changes. No dependencies, nothing fetched from elsewhere.
(function () {
  'use strict';

  function showError(message) {
    var box = document.getElementById('live-error');
    if (!box) { return; }
    box.textContent = message;
    box.hidden = false;
  }

  // Replace el's contents with the HTML fragment at url.
  function refresh(el, url) {
    return fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (resp) {
        if (!resp.ok) {
          throw new Error('the server answered ' + resp.status + ' ' + resp.statusText);
        }
        var version = resp.headers.get('x-fragment-version');
        return resp.text().then(function (html) { return { html: html, version: version }; });
      })
      .then(function (got) {
        // Unchanged (the stream replaying what came before the page): keep
        // the page as it is, with whatever is being typed into it.
        if (got.version && got.version === el.getAttribute('data-live-version')) { return; }
        if (got.version) { el.setAttribute('data-live-version', got.version); }
        el.innerHTML = got.html;
      })
      .catch(function (err) { showError('Could not refresh this page: ' + err.message + '. Reload to try again.'); });
  }

  function watch(el) {
    var src = el.getAttribute('data-live-src');
    var fragment = el.getAttribute('data-live-fragment');
    var names = (el.getAttribute('data-live-events') || 'status').split(',');
    if (!src || !fragment || !window.EventSource) { return; }
    var pending = null;
    var source = new EventSource(src);
    var schedule = function () {
      // Events can come in bursts: one refresh for each burst.
      if (pending) { return; }
      pending = setTimeout(function () { pending = null; refresh(el, fragment); }, 100);
    };
    names.forEach(function (name) {
      source.addEventListener(name.trim(), function (ev) {
        if (name.trim() === 'status') {
          try {
            var data = JSON.parse(ev.data);
            var badge = el.querySelector('[data-field="status"]');
            if (badge && data.status) {
              badge.textContent = data.status;
              badge.className = 'status status-' + data.status;
            }
            if (['completed', 'failed', 'cancelled'].indexOf(data.status) >= 0) { source.close(); }
          } catch (e) { /* not JSON: the refresh below still runs */ }
        }
        schedule();
      });
    });
    source.onerror = function () {
      // A finished object's stream ends (and answers 204 to a reconnect);
      // anything else is worth saying.
      if (source.readyState === EventSource.CLOSED) { return; }
    };
  }

  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('[data-live-src]'), watch);
    // Confirm destructive actions.
    Array.prototype.forEach.call(document.querySelectorAll('button[data-confirm]'), function (b) {
      b.addEventListener('click', function (ev) {
        if (!window.confirm(b.getAttribute('data-confirm'))) { ev.preventDefault(); }
      });
    });
  });
}());
