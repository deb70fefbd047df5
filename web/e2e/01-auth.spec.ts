// Logging in and out, deep links, and what a lost session does.
import {
  EMAIL,
  PASSWORD,
  expect,
  login,
  loginHeading,
  pageHeading,
  section,
  shot,
  submitLogin,
  test,
} from './helpers';

test('the root redirects to the login page of the app', async ({ page }) => {
  await page.goto('/');
  await expect(page).toHaveURL(/\/app\/?$/);
  await expect(loginHeading(page)).toBeVisible();
  await expect(page.getByRole('textbox', { name: 'Password', exact: true })).toHaveAttribute(
    'type',
    'password',
  );
  await shot(page, 'login');
});

test('a wrong password shows the server error and keeps the login page', async ({ page }) => {
  await page.goto('/app/');
  await submitLogin(page, EMAIL, `${PASSWORD}-wrong`);
  await expect(page.getByRole('alert')).toContainText('wrong email or password');
  await expect(loginHeading(page)).toBeVisible();
  await expect(pageHeading(page)).toHaveCount(0);
  await shot(page, 'login-error');
});

test('logging in shows the page, its sections and the actor', async ({ page }) => {
  await login(page);
  await expect(page.getByText(EMAIL).first()).toBeVisible();
  await expect(page.getByRole('button', { name: 'Log out', exact: true })).toBeVisible();
  for (const name of [
    'Manual Backup',
    'Backup History',
    'Scheduled Backups',
    'Cloud Storage',
    'Recent activity',
  ]) {
    await expect(section(page, name), `section "${name}"`).toBeVisible();
  }
});

test('a deep link loads the page after login, and again on reload', async ({ page }) => {
  await login(page, '/app/settings/backup');
  await expect(page).toHaveURL(/\/app\/settings\/backup$/);
  await page.reload();
  await expect(pageHeading(page)).toBeVisible();
  await expect(loginHeading(page)).toHaveCount(0);
});

test('logout returns to the login page and a reload stays there', async ({ page }) => {
  await login(page);
  await page.getByRole('button', { name: 'Log out', exact: true }).click();
  await expect(loginHeading(page)).toBeVisible();
  await expect(pageHeading(page)).toHaveCount(0);
  await page.reload();
  await expect(loginHeading(page)).toBeVisible();
  await expect(pageHeading(page)).toHaveCount(0);
  // The session is gone on the server too.
  expect((await page.request.get('/auth/me')).status()).toBe(401);
});

test('a 401 (session lost) sends the page back to the login form', async ({ page }) => {
  await login(page);
  await page.context().clearCookies();
  try {
    await section(page, 'Manual Backup')
      .getByRole('button', { name: 'Create backup', exact: true })
      .click({ timeout: 5_000 });
  } catch (error) {
    // A background refresh may have met the 401 first and already left the page.
    if (!(await loginHeading(page).isVisible())) throw error;
  }
  await expect(loginHeading(page)).toBeVisible();
  await expect(pageHeading(page)).toHaveCount(0);
  // Logging in again works without a reload.
  await submitLogin(page, EMAIL, PASSWORD);
  await expect(pageHeading(page)).toBeVisible();
});
