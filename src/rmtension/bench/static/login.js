// The login token leaves the address bar (and the history) as soon as the page loads; the form
// holds it until the reviewer signs in.
if (window.location.search) {
  window.history.replaceState(null, "", "/login");
}
