// Shared helpers of the e2e specs: credentials, login, section lookup, screenshots, and a
// guard that fails any test during which a native dialog opened or the page threw.
// Elements are found by role + accessible name, exactly as web/UI_CONTRACT.md fixes them.
import path from 'node:path';

import { test as base, expect, type Locator, type Page } from '@playwright/test';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name} (tests/test_web_e2e.py does)`);
  return value;
}

export const EMAIL = required('E2E_EMAIL');
export const PASSWORD = required('E2E_PASSWORD');
const SCREENSHOTS = required('E2E_SCREENSHOTS');

/** Different in every run, so the specs also work against a server that has seen a run. */
export const RUN = Date.now().toString(36);

export const XSS = '<img src=x onerror=alert(1)>';

export const test = base.extend<{ guard: void }>({
  guard: [
    async ({ page }, use) => {
      const dialogs: string[] = [];
      const errors: string[] = [];
      page.on('dialog', (dialog) => {
        dialogs.push(`${dialog.type()}: ${dialog.message()}`);
        void dialog.dismiss().catch(() => undefined);
      });
      page.on('pageerror', (error) => errors.push(String(error)));
      await use();
      expect(dialogs, 'no native alert/confirm/prompt may open (XSS or window.confirm)').toEqual(
        [],
      );
      expect(errors, 'no uncaught exception in the page').toEqual([]);
    },
    { auto: true },
  ],
});

export { expect };

export function loginHeading(page: Page): Locator {
  return page.getByRole('heading', { name: 'Sign in to Nexus Backup', exact: true });
}

export function pageHeading(page: Page): Locator {
  return page.getByRole('heading', { level: 1, name: 'Backups', exact: true });
}

/** Fill and submit the login form (the page must show it). */
export async function submitLogin(page: Page, email: string, password: string): Promise<void> {
  await expect(loginHeading(page)).toBeVisible();
  await page.getByRole('textbox', { name: 'Email', exact: true }).fill(email);
  await page.getByRole('textbox', { name: 'Password', exact: true }).fill(password);
  await page.getByRole('button', { name: 'Log in', exact: true }).click();
}

/** Open `at` (default /app/), log in, and wait for the page heading. */
export async function login(page: Page, at = '/app/'): Promise<void> {
  await page.goto(at);
  await submitLogin(page, EMAIL, PASSWORD);
  await expect(
    pageHeading(page),
    'the page after logging in (if the login form came back saying the session has ended, ' +
      'the first API calls after POST /auth/login were answered 401: see the server log)',
  ).toBeVisible();
}

/** The <section> whose h2 is `name`. */
export function section(page: Page, name: string): Locator {
  return page
    .getByRole('heading', { level: 2, name, exact: true })
    .locator('xpath=ancestor::section[1]');
}

/** A switch, or a checkbox used as one. */
export function toggle(scope: Page | Locator, name: string): Locator {
  return scope
    .getByRole('switch', { name, exact: true })
    .or(scope.getByRole('checkbox', { name, exact: true }));
}

export function screenshotPath(name: string): string {
  return path.join(SCREENSHOTS, `${name}.png`);
}

/** Save a screenshot of the whole page, or of one element. */
export async function shot(target: Page | Locator, name: string): Promise<void> {
  const file = screenshotPath(name);
  if ('goto' in target) {
    await target.screenshot({ path: file, fullPage: true, animations: 'disabled' });
  } else {
    await target.scrollIntoViewIfNeeded();
    await target.screenshot({ path: file, animations: 'disabled' });
  }
}

/** GET a JSON API path with the page's session cookie; must answer 200. */
export async function apiGet<T>(page: Page, url: string): Promise<T> {
  const response = await page.request.get(url);
  expect(response.status(), `GET ${url}: ${await response.text()}`).toBe(200);
  return (await response.json()) as T;
}

/** POST JSON with the session cookie and its CSRF token (from /auth/me). */
export async function apiPost<T>(page: Page, url: string, data: unknown): Promise<T> {
  const me = await apiGet<{ csrfToken: string }>(page, '/auth/me');
  const response = await page.request.post(url, {
    data,
    headers: { 'X-CSRF-Token': me.csrfToken },
    timeout: 60_000,
  });
  expect(response.ok(), `POST ${url}: ${response.status()} ${await response.text()}`).toBe(true);
  return (await response.json()) as T;
}

/** Choose the <option> whose value or text is `wanted` (case-insensitive). */
export async function choose(select: Locator, wanted: string): Promise<void> {
  const options = await select
    .locator('option')
    .evaluateAll((nodes) =>
      nodes.map((n) => ({ value: (n as HTMLOptionElement).value, text: n.textContent ?? '' })),
    );
  const match = options.find(
    (o) =>
      o.value.toLowerCase() === wanted.toLowerCase() ||
      o.text.trim().toLowerCase() === wanted.toLowerCase(),
  );
  expect(match, `an option "${wanted}" in ${JSON.stringify(options)}`).toBeTruthy();
  await select.selectOption(match!.value);
}

/** The first <option> (the "all" choice) of a filter. */
export async function chooseFirst(select: Locator): Promise<void> {
  await select.selectOption({ index: 0 });
}

/** No element anywhere carries an inline event handler or is an <img src=x>. */
export async function expectNoInjectedMarkup(page: Page): Promise<void> {
  await expect(page.locator('img[src="x"]')).toHaveCount(0);
  const handlers = await page.evaluate(() =>
    Array.from(document.querySelectorAll('*')).filter((el) => el.hasAttribute('onerror')).length,
  );
  expect(handlers, 'elements with an onerror attribute').toBe(0);
}

export interface BackupItem {
  id: string;
  name: string;
  description: string | null;
  status: string;
}

export interface BackupList {
  items: BackupItem[];
  total: number;
}

export interface ScheduleItem {
  id: string;
  name: string;
  isEnabled: boolean;
  cronExpression: string;
  timezone: string;
  retentionDays: number | null;
}
