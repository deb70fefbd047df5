/// <reference types="vitest/config" />
import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// The API lives on the same origin, without a prefix. In dev, forward its paths to uvicorn.
const api = 'http://127.0.0.1:8000'
const apiPaths = ['/auth', '/backups', '/restores', '/schedules', '/storage', '/audit', '/health', '/openapi.json', '/docs']

export default defineConfig({
  base: '/app/',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true },
  server: {
    proxy: Object.fromEntries(apiPaths.map((path) => [path, { target: api }])),
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./vitest.setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    unstubGlobals: true,
  },
})
