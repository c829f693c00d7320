// Draws the API's reference from /openapi.json. A file of its own, not an inline script:
// the page's Content-Security-Policy runs scripts from k2e's origin only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  showExtensions: true,
  showCommonExtensions: true,
  // No badge from an outside validator service: the page loads nothing from elsewhere.
  validatorUrl: null,
  persistAuthorization: false,
});
