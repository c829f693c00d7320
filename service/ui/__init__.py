"""The web dashboard served under /ui: static pages and ES modules, no build step."""
