// Cloud storage when none is configured, and the page on a 375 px wide phone.
import {
  type BackupItem,
  RUN,
  apiPost,
  expect,
  login,
  pageHeading,
  section,
  shot,
  test,
} from './helpers';

test('Cloud Storage says Not configured and cloud sync is off', async ({ page }) => {
  await login(page);
  const storage = section(page, 'Cloud Storage');
  await expect(storage.getByText('Not configured', { exact: false }).first()).toBeVisible();
  await expect(storage.getByText(/^Configured$/)).toHaveCount(0);

  // Nothing to sync to: the manual backup's "Sync to cloud" is disabled (with a hint).
  const sync = section(page, 'Manual Backup').getByRole('checkbox', {
    name: 'Sync to cloud',
    exact: true,
  });
  await expect(sync).toBeDisabled();
  await expect(sync).not.toBeChecked();

  // Testing the connection says why it cannot work, as an alert.
  const check = storage.getByRole('button', { name: 'Test connection', exact: true });
  if (await check.isEnabled()) {
    await check.click();
    await expect(storage.getByRole('alert')).toBeVisible();
    await expect(storage.getByRole('alert')).not.toBeEmpty();
    await expect(storage.getByRole('status').filter({ hasText: 'Connection OK' })).toHaveCount(0);
  }
  await shot(storage, 'cloud-storage');
});

test.describe('on a 375 px wide screen', () => {
  test.use({ viewport: { width: 375, height: 812 }, isMobile: false });

  test('the login page fits without horizontal scrolling', async ({ page }) => {
    await page.goto('/app/');
    await expect(page.getByRole('button', { name: 'Log in', exact: true })).toBeVisible();
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(width).toBeLessThanOrEqual(375 + 1);
  });

  test('the page fits without horizontal scrolling', async ({ page }) => {
    await login(page);
    // A backup with a long name and description, so the history table has a wide row.
    const name = `e2e-mobile-${RUN}-with-a-rather-long-name-for-a-narrow-screen`;
    const made = await apiPost<BackupItem>(page, '/backups?wait=true', {
      name,
      description: 'A long description that must wrap or scroll inside its container. '.repeat(3),
    });
    expect(made.status).toBe('completed');
    await page.reload();
    await expect(pageHeading(page)).toBeVisible();
    await expect(page.getByRole('button', { name: `Delete ${name}`, exact: true })).toBeAttached();
    // Wait for the data, so the widest content (the history table) is there.
    await expect(section(page, 'Cloud Storage').getByText('Not configured').first()).toBeVisible();
    await expect(section(page, 'Backup History').getByRole('table')).toBeVisible();
    await shot(page, 'mobile-375');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(width, 'document.documentElement.scrollWidth at 375 px').toBeLessThanOrEqual(375 + 1);
    const body = await page.evaluate(() => document.body.scrollWidth);
    expect(body, 'document.body.scrollWidth at 375 px').toBeLessThanOrEqual(375 + 1);
  });
});
