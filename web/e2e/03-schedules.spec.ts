// Scheduled backups: the cron preview (errors and next runs), presets, saving, toggling,
// editing and deleting, and their audit entries.
import type { Locator, Page } from '@playwright/test';

import {
  RUN,
  type ScheduleItem,
  apiGet,
  expect,
  login,
  section,
  shot,
  test,
  toggle,
} from './helpers';

test.describe.configure({ mode: 'serial' });

const SCHEDULE = `e2e-weekdays-${RUN}`;
const OTHER = `e2e-other-${RUN}`;
const WEEKDAYS = 'At 03:30, Monday through Friday';

/** Open the schedule form ("New schedule" or "Edit <name>"): a dialog "Schedule" or inline. */
async function openForm(page: Page, button: string): Promise<Locator> {
  await section(page, 'Scheduled Backups').getByRole('button', { name: button, exact: true }).click();
  await expect(page.getByRole('textbox', { name: 'Schedule name', exact: true })).toBeVisible();
  const dialog = page.getByRole('dialog', { name: 'Schedule', exact: true });
  return (await dialog.count()) > 0 ? dialog : section(page, 'Scheduled Backups');
}

function cronField(form: Locator): Locator {
  return form.getByRole('textbox', { name: 'Cron expression', exact: true });
}

function nextRuns(form: Locator): Locator {
  return form.getByRole('list', { name: 'Next runs', exact: true });
}

/** The cron in words, as text outside any button (a preset is also named "Every 6 hours"). */
function described(scope: Locator, words: string): Locator {
  return scope
    .getByText(words)
    .locator('xpath=self::*[not(ancestor-or-self::button)]');
}

async function schedules(page: Page): Promise<ScheduleItem[]> {
  return apiGet<ScheduleItem[]>(page, '/schedules');
}

test('the cron preview shows errors, then the meaning and the next 5 runs', async ({ page }) => {
  await login(page);
  const list = section(page, 'Scheduled Backups');
  if ((await schedules(page)).length === 0) {
    await expect(list.getByText('No schedules yet')).toBeVisible();
  }

  const form = await openForm(page, 'New schedule');
  await form.getByRole('textbox', { name: 'Schedule name', exact: true }).fill(SCHEDULE);
  const zone = form
    .getByRole('combobox', { name: 'Timezone', exact: true })
    .or(form.getByRole('textbox', { name: 'Timezone', exact: true }));
  // The browser runs in America/Guyana (playwright.config.ts).
  expect(['America/Guyana', 'UTC']).toContain(await zone.inputValue());

  await cronField(form).fill('61 * * * *');
  const error = form.getByRole('alert').filter({ hasText: /61|range/i });
  await expect(error).toBeVisible();
  await expect(error).toContainText('out of range');
  await expect(nextRuns(form)).toHaveCount(0);

  await cronField(form).fill('30 3 * * 1-5');
  await expect(error).toHaveCount(0);
  await expect(described(form, WEEKDAYS)).toBeVisible();
  const runs = nextRuns(form).getByRole('listitem');
  await expect(runs).toHaveCount(5);
  // Browser and schedule share the zone, so every run reads 03:30 (or 3:30 AM).
  for (const text of await runs.allInnerTexts()) expect(text).toMatch(/\b0?3:30\b/);

  const presets: [string, string, string][] = [
    ['Daily 2 AM', '0 2 * * *', 'At 02:00'],
    ['Weekly Sunday', '0 0 * * 0', 'At 00:00, only on Sunday'],
    ['Every 6 hours', '0 */6 * * *', 'Every 6 hours'],
    ['Weekdays 3:30', '30 3 * * 1-5', WEEKDAYS],
  ];
  for (const [button, cron, words] of presets) {
    await form.getByRole('button', { name: button, exact: true }).click();
    await expect(cronField(form)).toHaveValue(cron);
    await expect(described(form, words)).toBeVisible();
    await expect(nextRuns(form).getByRole('listitem')).toHaveCount(5);
  }
  await shot(page, 'schedule-form');

  await form.getByRole('spinbutton', { name: 'Retention days', exact: true }).fill('14');
  await form.getByRole('button', { name: 'Save schedule', exact: true }).click();

  await expect(toggle(list, `Enabled ${SCHEDULE}`)).toBeVisible();
  await expect(toggle(list, `Enabled ${SCHEDULE}`)).toBeChecked();
  await expect(described(list, WEEKDAYS).first()).toBeVisible();
  await expect(list.getByText(/no schedules yet/i)).toHaveCount(0);

  const saved = (await schedules(page)).find((s) => s.name === SCHEDULE);
  expect(saved).toMatchObject({
    cronExpression: '30 3 * * 1-5',
    isEnabled: true,
    retentionDays: 14,
  });
  expect(['America/Guyana', 'UTC']).toContain(saved?.timezone);
});

test('a schedule can be switched off and on, and it stays so', async ({ page }) => {
  await login(page);
  const list = section(page, 'Scheduled Backups');
  const enabled = toggle(list, `Enabled ${SCHEDULE}`);
  await expect(enabled).toBeChecked();

  await enabled.click();
  await expect(enabled).not.toBeChecked();
  await expect
    .poll(async () => (await schedules(page)).find((s) => s.name === SCHEDULE)?.isEnabled)
    .toBe(false);
  await page.reload();
  await expect(enabled).not.toBeChecked();

  await enabled.click();
  await expect(enabled).toBeChecked();
  await expect
    .poll(async () => (await schedules(page)).find((s) => s.name === SCHEDULE)?.isEnabled)
    .toBe(true);
  await page.reload();
  await expect(enabled).toBeChecked();
  await expect(list).toContainText(SCHEDULE);
  await shot(list, 'scheduled-backups');
});

test('editing a schedule keeps its values and saves the change', async ({ page }) => {
  await login(page);
  const form = await openForm(page, `Edit ${SCHEDULE}`);
  await expect(form.getByRole('textbox', { name: 'Schedule name', exact: true })).toHaveValue(
    SCHEDULE,
  );
  await expect(cronField(form)).toHaveValue('30 3 * * 1-5');
  await expect(form.getByRole('spinbutton', { name: 'Retention days', exact: true })).toHaveValue(
    '14',
  );
  await form.getByRole('button', { name: 'Daily 2 AM', exact: true }).click();
  await expect(nextRuns(form).getByRole('listitem')).toHaveCount(5);
  await form.getByRole('button', { name: 'Save schedule', exact: true }).click();

  const list = section(page, 'Scheduled Backups');
  await expect(described(list, 'At 02:00').first()).toBeVisible();
  await expect
    .poll(async () => (await schedules(page)).find((s) => s.name === SCHEDULE)?.cronExpression)
    .toBe('0 2 * * *');
  const saved = (await schedules(page)).find((s) => s.name === SCHEDULE);
  expect(saved?.retentionDays).toBe(14);
});

test('a schedule can be deleted', async ({ page }) => {
  await login(page);
  const form = await openForm(page, 'New schedule');
  await form.getByRole('textbox', { name: 'Schedule name', exact: true }).fill(OTHER);
  await form.getByRole('button', { name: 'Every 6 hours', exact: true }).click();
  await expect(nextRuns(form).getByRole('listitem')).toHaveCount(5);
  await form.getByRole('button', { name: 'Save schedule', exact: true }).click();
  const list = section(page, 'Scheduled Backups');
  await expect(toggle(list, `Enabled ${OTHER}`)).toBeVisible();

  await list.getByRole('button', { name: `Delete ${OTHER}`, exact: true }).click();
  // A confirmation dialog is optional for schedules; confirm it when there is one.
  const dialog = page.getByRole('dialog');
  const after = async () => {
    if (await dialog.isVisible()) return 'dialog';
    return (await toggle(list, `Enabled ${OTHER}`).count()) === 0 ? 'gone' : 'waiting';
  };
  await expect.poll(after).not.toBe('waiting');
  if ((await after()) === 'dialog') {
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    await expect(dialog).toHaveCount(0);
  }
  await expect(toggle(list, `Enabled ${OTHER}`)).toHaveCount(0);
  await expect(toggle(list, `Enabled ${SCHEDULE}`)).toBeVisible();
  expect((await schedules(page)).map((s) => s.name)).not.toContain(OTHER);

  // The audit trail (after a reload, which logs nothing) has the schedule changes.
  await page.reload();
  const activity = section(page, 'Recent activity');
  for (const action of ['schedule.delete', 'schedule.create', 'schedule.update']) {
    await expect(activity.getByText(action, { exact: false }).first()).toBeVisible();
  }
});
