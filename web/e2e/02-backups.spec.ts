// One backup's life through the page: created with progress, listed, filtered, downloaded,
// verified, offered for restore, deleted; and hostile text stays text.
import type { Download, Page } from '@playwright/test';

import {
  type BackupList,
  RUN,
  XSS,
  apiGet,
  choose,
  chooseFirst,
  expect,
  expectNoInjectedMarkup,
  login,
  section,
  shot,
  test,
} from './helpers';

test.describe.configure({ mode: 'serial' });

const NAME = `e2e-backup-${RUN}`;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|\+00:00)$/;

declare global {
  interface Window {
    __progress?: { seen: boolean; values: string[]; texts: string[]; phases: string[] };
  }
}

function historyRow(page: Page) {
  return section(page, 'Backup History').getByRole('row').filter({ hasText: NAME });
}

test('a manual backup shows its progress and completes', async ({ page }) => {
  await login(page);
  const manual = section(page, 'Manual Backup');
  const history = section(page, 'Backup History');
  const before = await apiGet<BackupList>(page, '/backups?limit=1');
  if (before.total === 0) await expect(history.getByText('No backups yet')).toBeVisible();

  // Record every progressbar the page ever renders, however briefly it lives.
  await page.evaluate(() => {
    const state = {
      seen: false,
      values: [] as string[],
      texts: [] as string[],
      phases: [] as string[],
    };
    window.__progress = state;
    const phases = ['dumping database and archiving uploads', 'writing archive', 'verifying'];
    const look = () => {
      const text = document.body.innerText;
      for (const phase of phases) {
        if (text.includes(phase) && !state.phases.includes(phase)) state.phases.push(phase);
      }
      for (const bar of Array.from(document.querySelectorAll('[role="progressbar"]'))) {
        state.seen = true;
        state.values.push(bar.getAttribute('aria-valuenow') ?? '');
        state.texts.push(bar.getAttribute('aria-label') ?? '');
      }
    };
    new MutationObserver(look).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true,
      characterData: true,
    });
  });

  await manual.getByRole('textbox', { name: 'Backup name', exact: true }).fill(NAME);
  await manual.getByRole('textbox', { name: 'Description', exact: true }).fill(XSS);
  await manual.getByRole('button', { name: 'Create backup', exact: true }).click();

  const done = manual.getByRole('status').filter({ hasText: /completed/i });
  await expect(done).toBeVisible({ timeout: 45_000 });
  await shot(page, 'backup-completed');

  const progress = await page.evaluate(() => window.__progress);
  expect(progress?.seen, 'a role=progressbar appeared while the backup ran').toBe(true);
  expect(progress?.texts).toContain('Backup progress');
  for (const value of progress?.values.filter((v) => v !== '') ?? []) {
    expect(Number(value)).toBeGreaterThanOrEqual(0);
    expect(Number(value)).toBeLessThanOrEqual(100);
  }
  const seen = `aria-valuenow ${progress?.values.join(',')}; phases seen: ${progress?.phases}`;
  test.info().annotations.push({ type: 'progress', description: seen });
  console.log(`progress of ${NAME}: ${seen}`);
  await expect(manual.getByRole('alert')).toHaveCount(0);

  // The catalog agrees.
  const after = await apiGet<BackupList>(page, '/backups?limit=100');
  const made = after.items.find((b) => b.name === NAME);
  expect(made?.status).toBe('completed');
  expect(made?.description).toBe(XSS);
  await expectNoInjectedMarkup(page);
});

test('the backup is listed in Backup History with its details', async ({ page }) => {
  await login(page);
  const history = section(page, 'Backup History');
  await expect(history.getByRole('table')).toBeVisible();
  for (const header of [
    'Name',
    'Type',
    'Status',
    'Size',
    'Created',
    'Duration',
    'Cloud',
    'Actions',
  ]) {
    await expect(history.getByRole('columnheader', { name: header, exact: true })).toBeVisible();
  }
  const row = historyRow(page);
  await expect(row).toHaveCount(1);
  await expect(row).toContainText(/completed/i);
  await expect(row).toContainText(/manual/i);
  await expect(row.getByRole('button', { name: `Download ${NAME}`, exact: true })).toBeEnabled();
  await expect(row.getByRole('button', { name: `Verify ${NAME}`, exact: true })).toBeEnabled();
  await expect(row.getByRole('button', { name: `Restore ${NAME}`, exact: true })).toBeEnabled();
  await expect(row.getByRole('button', { name: `Delete ${NAME}`, exact: true })).toBeEnabled();

  // Created: local time on screen, the UTC ISO time in a title attribute.
  const titles = await row
    .locator('[title]')
    .evaluateAll((nodes) => nodes.map((n) => n.getAttribute('title') ?? ''));
  expect(titles.some((t) => ISO_UTC.test(t)), `a UTC ISO title in ${titles}`).toBe(true);

  // The description is hostile HTML: it must show as text, never as markup.
  await expect(page.getByText(XSS, { exact: false }).first()).toBeVisible();
  await expectNoInjectedMarkup(page);

  await expect(history.getByRole('button', { name: 'Previous page', exact: true })).toBeVisible();
  await expect(history.getByRole('button', { name: 'Next page', exact: true })).toBeVisible();
  await shot(history, 'backup-history');

  // Filters.
  const status = history.getByRole('combobox', { name: 'Status filter', exact: true });
  const kind = history.getByRole('combobox', { name: 'Type filter', exact: true });
  await choose(status, 'failed');
  await expect(row).toHaveCount(0);
  await choose(status, 'completed');
  await expect(row).toHaveCount(1);
  await chooseFirst(status);
  await choose(kind, 'scheduled');
  await expect(row).toHaveCount(0);
  await choose(kind, 'manual');
  await expect(row).toHaveCount(1);
  await chooseFirst(kind);
  await expect(row).toHaveCount(1);
});

test('a download link downloads the gzip archive', async ({ page }) => {
  await login(page);
  const downloads: Download[] = [];
  page.on('download', (d) => downloads.push(d));
  page.context().on('page', (popup) => popup.on('download', (d) => downloads.push(d)));

  await historyRow(page).getByRole('button', { name: `Download ${NAME}`, exact: true }).click();
  const link = page.getByRole('link', { name: `Download link for ${NAME}`, exact: true });
  await expect(link).toBeVisible();
  const href = await link.getAttribute('href');
  expect(href, 'the link has an href').toBeTruthy();
  const url = new URL(href!, page.url());
  expect(url.origin).toBe(new URL(page.url()).origin);

  const response = await page.request.get(url.toString());
  expect(response.status()).toBe(200);
  const body = await response.body();
  expect(body.length).toBeGreaterThan(1000);
  expect([body[0], body[1]], 'gzip magic number 1f 8b').toEqual([0x1f, 0x8b]);

  await expect
    .poll(() => downloads.length, { message: 'the click also starts the download' })
    .toBeGreaterThan(0);
  expect(downloads[0].suggestedFilename()).toContain(NAME);
  expect(await downloads[0].failure()).toBeNull();
});

test('verifying the backup says Verified', async ({ page }) => {
  await login(page);
  await historyRow(page).getByRole('button', { name: `Verify ${NAME}`, exact: true }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Verified' }).first()).toBeVisible({
    timeout: 30_000,
  });
  await expect(section(page, 'Backup History').getByRole('alert')).toHaveCount(0);
});

test('the restore dialog asks for the name and can be left without restoring', async ({
  page,
}) => {
  await login(page);
  const open = historyRow(page).getByRole('button', { name: `Restore ${NAME}`, exact: true });
  await open.click();
  const dialog = page.getByRole('dialog', { name: `Restore ${NAME}`, exact: true });
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText(/database/i);
  await expect(dialog).toContainText(/upload/i);
  const confirm = dialog.getByRole('textbox', {
    name: 'Type the backup name to confirm',
    exact: true,
  });
  await expect(confirm).toBeFocused();
  const restore = dialog.getByRole('button', { name: 'Restore', exact: true });
  await expect(restore).toBeDisabled();
  await confirm.fill(`${NAME}x`);
  await expect(restore).toBeDisabled();
  await confirm.fill(NAME);
  await expect(restore).toBeEnabled();
  await shot(page, 'restore-dialog');
  await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();
  await expect(dialog).toHaveCount(0);

  await open.click();
  await expect(dialog).toBeVisible();
  await page.keyboard.press('Escape');
  await expect(dialog).toHaveCount(0);

  // Nothing was restored.
  const restores = await apiGet<{ items?: unknown[] } | unknown[]>(page, '/restores');
  const items = Array.isArray(restores) ? restores : (restores.items ?? []);
  expect(items).toHaveLength(0);
});

test('a backup name with markup is refused and the error shows as text', async ({ page }) => {
  await login(page);
  const manual = section(page, 'Manual Backup');
  const before = await apiGet<BackupList>(page, '/backups?limit=1');
  await manual.getByRole('textbox', { name: 'Backup name', exact: true }).fill(XSS);
  await manual.getByRole('textbox', { name: 'Description', exact: true }).fill('');
  const create = manual.getByRole('button', { name: 'Create backup', exact: true });
  if (await create.isEnabled()) {
    await create.click();
    await expect(manual.getByRole('alert')).toBeVisible();
    await expect(manual.getByRole('alert')).not.toBeEmpty();
  }
  await expectNoInjectedMarkup(page);
  const after = await apiGet<BackupList>(page, '/backups?limit=1');
  expect(after.total).toBe(before.total);
});

test('deleting the backup asks first, then removes it', async ({ page }) => {
  await login(page);
  const row = historyRow(page);
  const remove = row.getByRole('button', { name: `Delete ${NAME}`, exact: true });
  const dialog = page.getByRole('dialog', { name: `Delete ${NAME}`, exact: true });

  await remove.click();
  await expect(dialog).toBeVisible();
  await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();
  await expect(dialog).toHaveCount(0);
  await expect(row).toHaveCount(1);

  await remove.click();
  await expect(dialog).toBeVisible();
  await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
  await expect(dialog).toHaveCount(0);
  await expect(row).toHaveCount(0);
  await expect(page.getByRole('button', { name: `Delete ${NAME}`, exact: true })).toHaveCount(0);

  const list = await apiGet<BackupList>(page, '/backups?limit=100');
  expect(list.items.map((b) => b.name)).not.toContain(NAME);

  // The audit trail shows it (a reload: no new login entry pushes it out of the latest 10).
  await page.reload();
  const activity = section(page, 'Recent activity');
  for (const action of ['backup.delete', 'backup.verify']) {
    await expect(activity.getByText(action, { exact: false }).first()).toBeVisible();
  }
  await shot(activity, 'recent-activity');
});
