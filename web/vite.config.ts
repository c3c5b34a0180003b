/// <reference types="vitest/config" />
// The chat page's build: `npm run build` writes into the Python package (kubechat/api/static), which
// the API serves at `/` (kubechat/api/web.py). `npm run dev` serves the page with hot reload and
// proxies the API's routes to `make serve` (KUBECHAT_API, default http://127.0.0.1:8000).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const api = process.env.KUBECHAT_API ?? "http://127.0.0.1:8000";
const apiRoutes = ["/health", "/ready", "/models", "/sessions", "/knowledge-bases", "/images", "/v1", "/docs", "/openapi.json"];

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../kubechat/api/static",
    emptyOutDir: true,
    // Hashed file names under assets/: the API marks them immutable for a year.
    assetsDir: "assets",
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      ...Object.fromEntries(apiRoutes.map((route) => [route, { target: api }])),
      "/ws": { target: api, ws: true },
    },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
  },
});
