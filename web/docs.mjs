// /docs: Swagger UI over the server's own /openapi.json, served from web/vendor/ (no CDN).
// swagger-ui-bundle.js is a classic script that defines window.SwaggerUIBundle; module
// scripts run after deferred ones, so it is there by now.
const TOKEN_KEY = 'avatar-page.token';

const ui = window.SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#reference',
  deepLinking: true,
  tryItOutEnabled: true,
  // No call to an outside validator service: the page may only talk to its own origin.
  validatorUrl: null,
  // Keeps the token out of localStorage; a token lives in the tab (sessionStorage) only.
  persistAuthorization: false,
  onComplete: () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) ui.preauthorizeApiKey('bearerAuth', token);
  },
});
