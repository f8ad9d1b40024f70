// Sign in with a token (POST /api/login sets the session cookie), then go to the app.

const form = document.getElementById("login-form");
const input = document.getElementById("token");
const error = document.getElementById("login-error");

function showError(message) {
  error.textContent = message;
  error.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = input.value.trim();
  if (!token) {
    showError("Enter your token.");
    return;
  }
  let response;
  try {
    response = await fetch("/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token}),
    });
  } catch {
    showError("The server does not answer: is `curato serve` running?");
    return;
  }
  if (response.ok) {
    window.location.assign("/");
    return;
  }
  let detail = `sign-in failed (${response.status})`;
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch { /* not JSON: keep the status line */ }
  showError(detail);
  input.select();
});

// Already signed in (a valid cookie): straight to the app.
fetch("/api/me", {credentials: "same-origin"}).then((response) => {
  if (response.ok) window.location.replace("/");
}).catch(() => {});
