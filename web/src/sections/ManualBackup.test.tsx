import { screen, waitFor } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import { backup, json, mockApi, notConfigured, problem, renderWithClient, requestsTo } from '../test-utils'
import { ManualBackup } from './ManualBackup'

const configured = {
  ...notConfigured,
  configured: true,
  provider: 's3',
  bucket: 'backups',
  endpointHost: 'r2.example.com',
}

describe('Manual Backup', () => {
  it('disables Sync to cloud, with a hint, when cloud storage is not configured', async () => {
    mockApi({ 'GET /storage': () => json(notConfigured) })
    renderWithClient(<ManualBackup />)
    await waitFor(() =>
      expect(screen.getByRole('checkbox', { name: 'Sync to cloud' })).toHaveAccessibleDescription(
        /not configured/,
      ),
    )
    expect(screen.getByRole('checkbox', { name: 'Sync to cloud' })).toBeDisabled()
  })

  it('enables Sync to cloud when storage is configured', async () => {
    mockApi({ 'GET /storage': () => json(configured) })
    renderWithClient(<ManualBackup />)
    await waitFor(() => expect(screen.getByRole('checkbox', { name: 'Sync to cloud' })).toBeEnabled())
  })

  it('starts a backup and follows its progress until it completes', async () => {
    const states = [
      backup({ status: 'in_progress', completedAt: null, fileSize: null, progress: { phase: 'dumping database and archiving uploads', bytesDone: 450, bytesTotal: 1000, percent: 45 } }),
      backup({ name: 'before-upgrade', status: 'completed' }),
    ]
    const fetchMock = mockApi({
      'GET /storage': () => json(configured),
      'POST /backups': () =>
        json(backup({ name: 'before-upgrade', status: 'pending', startedAt: null, completedAt: null, fileSize: null }), 202),
      'GET /backups/b1': () => json(states.length > 1 ? states.shift() : states[0]),
      'GET /backups': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
    })
    renderWithClient(<ManualBackup />)
    const user = userEvent.setup()
    await user.type(screen.getByRole('textbox', { name: 'Backup name' }), 'before-upgrade')
    await user.type(screen.getByRole('textbox', { name: 'Description' }), 'before 2.0')
    await waitFor(() => expect(screen.getByRole('checkbox', { name: 'Sync to cloud' })).toBeEnabled())
    await user.click(screen.getByRole('checkbox', { name: 'Sync to cloud' }))
    await user.click(screen.getByRole('button', { name: 'Create backup' }))

    const bar = await screen.findByRole('progressbar', { name: 'Backup progress' })
    await waitFor(() => expect(bar).toHaveAttribute('aria-valuenow', '45'))
    expect(screen.getByText('dumping database and archiving uploads')).toBeInTheDocument()

    expect(await screen.findByRole('status', {}, { timeout: 3000 })).toHaveTextContent('completed')
    expect(screen.queryByRole('progressbar')).not.toBeInTheDocument()
    const [created] = requestsTo(fetchMock, 'POST /backups')
    expect(await created.json()).toEqual({
      name: 'before-upgrade',
      description: 'before 2.0',
      type: 'manual',
      syncToCloud: true,
    })
  })

  it('shows why a backup could not start', async () => {
    mockApi({
      'GET /storage': () => json(notConfigured),
      'POST /backups': () => problem(409, 'another backup is running: wait for it to finish', 'Busy'),
    })
    renderWithClient(<ManualBackup />)
    await userEvent.setup().click(screen.getByRole('button', { name: 'Create backup' }))
    expect(await screen.findByRole('alert')).toHaveTextContent('another backup is running')
  })

  it('shows the reason when the backup fails', async () => {
    mockApi({
      'GET /storage': () => json(notConfigured),
      'POST /backups': () => json(backup({ status: 'pending', completedAt: null }), 202),
      'GET /backups/b1': () => json(backup({ status: 'failed', errorMessage: 'disk full: free 2 GiB in /backups' })),
      'GET /backups': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
    })
    renderWithClient(<ManualBackup />)
    await userEvent.setup().click(screen.getByRole('button', { name: 'Create backup' }))
    expect(await screen.findByRole('alert', {}, { timeout: 3000 })).toHaveTextContent('disk full: free 2 GiB')
  })
})
