// End-to-end tests of the admin page against a real server.
// tests/test_web_e2e.py starts the server (there is no webServer here) and sets
// E2E_BASE_URL, E2E_EMAIL, E2E_PASSWORD and E2E_SCREENSHOTS.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defineConfig } from '@playwright/test';

const here = path.dirname(fileURLToPath(import.meta.url));

// The specs save their screenshots explicitly into this folder (workers inherit the env).
process.env.E2E_SCREENSHOTS ||= path.join(here, 'e2e-screenshots');

export default defineConfig({
  testDir: 'e2e',
  // Failure artefacts (error context); the pytest side points this at its tmp folder.
  outputDir: process.env.E2E_OUTPUT || path.join(here, 'test-results'),
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: true,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  use: {
    baseURL: process.env.E2E_BASE_URL,
    // A zone that is not UTC, so local-time rendering and the schedule's default zone are real.
    timezoneId: 'America/Guyana',
    locale: 'en-US',
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
    screenshot: 'off',
    trace: 'off',
    video: 'off',
    actionTimeout: 15_000,
    navigationTimeout: 30_000,
    launchOptions: {
      // Debian's Chromium: Playwright's own browser download does not work here.
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
});
