import { screen, waitFor, within } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import type { Schedule } from '../api/client'
import { json, mockApi, notConfigured, problem, renderWithClient, requestsTo } from '../test-utils'
import { Schedules } from './Schedules'

const nextRuns = [
  '2026-01-16T02:00:00Z',
  '2026-01-17T02:00:00Z',
  '2026-01-18T02:00:00Z',
  '2026-01-19T02:00:00Z',
  '2026-01-20T02:00:00Z',
]

function schedule(fields: Partial<Schedule> = {}): Schedule {
  return {
    id: 's1',
    name: 'Nightly',
    cronExpression: '0 2 * * *',
    timezone: 'UTC',
    description: 'At 02:00, every day',
    isEnabled: true,
    retentionDays: 30,
    syncToCloud: false,
    lastRunAt: null,
    nextRunAt: '2026-01-16T02:00:00Z',
    successCount: 3,
    failureCount: 1,
    createdAt: '2026-01-01T00:00:00Z',
    updatedAt: '2026-01-01T00:00:00Z',
    ...fields,
  }
}

function previewRoute(_request: Request, url: URL): Response {
  const cron = url.searchParams.get('cron') ?? ''
  if (cron.split(' ').length !== 5) {
    return problem(422, `cron expression ${JSON.stringify(cron)} needs 5 fields`, 'Unprocessable')
  }
  return json({ cronExpression: cron, timezone: url.searchParams.get('timezone'), description: 'At 02:00, every day', nextRuns })
}

describe('Scheduled Backups', () => {
  it('shows the empty state', async () => {
    mockApi({ 'GET /schedules': () => json([]), 'GET /storage': () => json(notConfigured) })
    renderWithClient(<Schedules />)
    expect(await screen.findByText('No schedules yet')).toBeInTheDocument()
  })

  it('lists schedules with their words, counts and controls', async () => {
    let current = schedule()
    const fetchMock = mockApi({
      'GET /schedules': () => json([current]),
      'POST /schedules/s1/toggle': () => {
        current = schedule({ isEnabled: !current.isEnabled, nextRunAt: null })
        return json(current)
      },
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
    })
    renderWithClient(<Schedules />)
    const item = (await screen.findByRole('heading', { name: 'Nightly' })).closest('li')!
    expect(item).toHaveTextContent('At 02:00, every day')
    expect(item).toHaveTextContent('3 succeeded, 1 failed')
    const toggle = within(item).getByRole('switch', { name: 'Enabled Nightly' })
    expect(toggle).toBeChecked()
    expect(within(item).getByRole('button', { name: 'Edit Nightly' })).toBeInTheDocument()
    expect(within(item).getByRole('button', { name: 'Delete Nightly' })).toBeInTheDocument()

    await userEvent.setup().click(toggle)
    await waitFor(() => expect(toggle).not.toBeChecked())
    expect(requestsTo(fetchMock, 'POST /schedules/s1/toggle')).toHaveLength(1)
  })

  it('shows the 422 detail for an invalid cron, and the 5 next runs for a valid one', async () => {
    const fetchMock = mockApi({
      'GET /schedules': () => json([]),
      'GET /storage': () => json(notConfigured),
      'GET /schedules/preview': previewRoute,
    })
    renderWithClient(<Schedules />)
    const user = userEvent.setup()
    await user.click(await screen.findByRole('button', { name: 'New schedule' }))
    const form = screen.getByRole('dialog', { name: 'Schedule' })
    expect(within(form).getByRole('textbox', { name: 'Schedule name' })).toHaveFocus()
    const zone = within(form).getByRole('combobox', { name: 'Timezone' }) as HTMLInputElement
    expect(zone.value).not.toBe('')

    const cron = within(form).getByRole('textbox', { name: 'Cron expression' })
    await user.type(cron, '0 2 * *')
    expect(await within(form).findByRole('alert')).toHaveTextContent('cron expression "0 2 * *" needs 5 fields')
    // Debounced: the half-typed expressions were not sent one by one.
    expect(requestsTo(fetchMock, 'GET /schedules/preview').length).toBeLessThanOrEqual(2)

    await user.type(cron, ' *')
    const runs = await within(form).findByRole('list', { name: 'Next runs' })
    expect(within(runs).getAllByRole('listitem')).toHaveLength(5)
    expect(within(form).queryByRole('alert')).not.toBeInTheDocument()
    expect(form).toHaveTextContent('At 02:00, every day')
    expect(runs.querySelector('time')).toHaveAttribute('title', '2026-01-16T02:00:00.000Z')
  })

  it('fills the cron from a preset and saves the schedule, showing a 422 from the server', async () => {
    let attempts = 0
    const fetchMock = mockApi({
      'GET /schedules': () => json([]),
      'GET /storage': () => json(notConfigured),
      'GET /schedules/preview': previewRoute,
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
      'POST /schedules': () => {
        attempts += 1
        return attempts === 1
          ? problem(422, "timezone 'Mars/Base' is unknown: use an IANA name like Europe/London", 'Unprocessable')
          : json(schedule({ name: 'Weekdays' }), 201)
      },
    })
    renderWithClient(<Schedules />)
    const user = userEvent.setup()
    await user.click(await screen.findByRole('button', { name: 'New schedule' }))
    const form = screen.getByRole('dialog', { name: 'Schedule' })
    await user.type(within(form).getByRole('textbox', { name: 'Schedule name' }), 'Weekdays')
    await user.click(within(form).getByRole('button', { name: 'Weekdays 3:30' }))
    expect(within(form).getByRole('textbox', { name: 'Cron expression' })).toHaveValue('30 3 * * 1-5')
    const zone = within(form).getByRole('combobox', { name: 'Timezone' })
    await user.clear(zone)
    await user.type(zone, 'Mars/Base')
    await user.type(within(form).getByRole('spinbutton', { name: 'Retention days' }), '14')
    expect(within(form).getByRole('checkbox', { name: 'Sync to cloud' })).toBeDisabled()

    await user.click(within(form).getByRole('button', { name: 'Save schedule' }))
    expect(await within(form).findByText(/Mars\/Base' is unknown/)).toBeInTheDocument()

    await user.clear(zone)
    await user.type(zone, 'UTC')
    await user.click(within(form).getByRole('button', { name: 'Save schedule' }))
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument())
    const sent = requestsTo(fetchMock, 'POST /schedules')
    expect(await sent[1].json()).toEqual({
      name: 'Weekdays',
      cronExpression: '30 3 * * 1-5',
      timezone: 'UTC',
      syncToCloud: false,
      isEnabled: true,
      retentionDays: 14,
    })
    expect(screen.getByRole('button', { name: 'New schedule' })).toHaveFocus()
  })
})
