import { screen, waitFor, within } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it, vi } from 'vitest'
import { backup, backupList, json, mockApi, problem, renderWithClient, requestsTo } from '../test-utils'
import { BackupHistory } from './BackupHistory'

describe('Backup History', () => {
  it('shows the empty state', async () => {
    mockApi({ 'GET /backups': () => json(backupList([])) })
    renderWithClient(<BackupHistory />)
    expect(await screen.findByText('No backups yet')).toBeInTheDocument()
  })

  it('lists backups with local dates, UTC in the title, and failed rows with their reason', async () => {
    mockApi({
      'GET /backups': () =>
        json(
          backupList([
            backup(),
            backup({ id: 'b2', name: 'broken', status: 'failed', errorMessage: 'pg_dump 15 cannot dump server 16' }),
          ]),
        ),
    })
    renderWithClient(<BackupHistory />)
    const table = await screen.findByRole('table')
    const headers = within(table).getAllByRole('columnheader').map((th) => th.textContent)
    expect(headers).toEqual(['Name', 'Type', 'Status', 'Size', 'Created', 'Duration', 'Cloud', 'Actions'])
    const row = screen.getByRole('row', { name: /nightly-1/ })
    expect(within(row).getByText('1.5 KiB')).toBeInTheDocument()
    expect(within(row).getByText('42 s')).toBeInTheDocument()
    expect(row.querySelector('time')).toHaveAttribute('title', '2026-01-15T12:00:00.000Z')
    expect(screen.getByRole('row', { name: /broken/ })).toHaveTextContent('pg_dump 15 cannot dump server 16')
  })

  it('renders a hostile backup name as text', async () => {
    const name = '<img src=x onerror=alert(1)>'
    mockApi({ 'GET /backups': () => json(backupList([backup({ name, description: '<b>bold</b>' })])) })
    const { container } = renderWithClient(<BackupHistory />)
    expect(await screen.findByText(name)).toBeInTheDocument()
    expect(screen.getByText('<b>bold</b>')).toBeInTheDocument()
    expect(container.querySelector('img')).toBeNull()
    expect(document.querySelector('img, b')).toBeNull()
    expect(screen.getByRole('button', { name: `Delete ${name}` })).toBeEnabled()
  })

  it('disables Delete while a backup is pending or running', async () => {
    mockApi({
      'GET /backups': () =>
        json(
          backupList([
            backup({ id: 'r', name: 'running', status: 'in_progress', completedAt: null, fileSize: null }),
            backup({ id: 'p', name: 'waiting', status: 'pending', startedAt: null, completedAt: null }),
            backup({ id: 'd', name: 'done' }),
          ]),
        ),
    })
    renderWithClient(<BackupHistory />)
    expect(await screen.findByRole('button', { name: 'Delete running' })).toBeDisabled()
    expect(screen.getByRole('button', { name: 'Delete waiting' })).toBeDisabled()
    expect(screen.getByRole('button', { name: 'Delete done' })).toBeEnabled()
  })

  it('keeps Restore disabled until the exact name is typed, then restores with {confirm}', async () => {
    const fetchMock = mockApi({
      'GET /backups': () => json(backupList([backup()])),
      'POST /backups/b1/restore': () =>
        json(
          {
            id: 'r1',
            status: 'pending',
            phase: null,
            backupId: 'b1',
            archivePath: '/backups/nightly-1.tar.zst',
            dryRun: false,
            forced: false,
            errorMessage: null,
            preRestoreBackupId: null,
            requestedBy: 'admin@example.com',
            createdAt: '2026-01-15T12:00:00Z',
            startedAt: null,
            completedAt: null,
          },
          202,
        ),
      'GET /restores/r1': () =>
        json({ id: 'r1', status: 'in_progress', phase: 'restoring', errorMessage: null }),
    })
    renderWithClient(<BackupHistory />)
    const user = userEvent.setup()
    const opener = await screen.findByRole('button', { name: 'Restore nightly-1' })
    await user.click(opener)

    const dialog = screen.getByRole('dialog', { name: 'Restore nightly-1' })
    expect(dialog).toHaveTextContent('the database')
    expect(dialog).toHaveTextContent('the uploaded files')
    const confirm = within(dialog).getByRole('textbox', { name: 'Type the backup name to confirm' })
    expect(confirm).toHaveFocus()
    const restore = within(dialog).getByRole('button', { name: 'Restore' })
    expect(restore).toBeDisabled()

    await user.type(confirm, 'nightly-')
    expect(restore).toBeDisabled()
    await user.type(confirm, '12')
    expect(restore).toBeDisabled()
    await user.type(confirm, '{Backspace}')
    expect(restore).toBeEnabled()
    expect(requestsTo(fetchMock, 'POST /backups/b1/restore')).toHaveLength(0)

    await user.click(restore)
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument())
    const [sent] = requestsTo(fetchMock, 'POST /backups/b1/restore')
    expect(await sent.json()).toMatchObject({ confirm: 'nightly-1' })
    expect(await screen.findByText(/Restore in progress: restoring/)).toBeInTheDocument()
  })

  it('closes the restore dialog on Escape and gives focus back to its button', async () => {
    mockApi({ 'GET /backups': () => json(backupList([backup()])) })
    renderWithClient(<BackupHistory />)
    const user = userEvent.setup()
    const opener = await screen.findByRole('button', { name: 'Restore nightly-1' })
    await user.click(opener)
    expect(screen.getByRole('dialog', { name: 'Restore nightly-1' })).toBeInTheDocument()
    await user.keyboard('{Escape}')
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument()
    expect(opener).toHaveFocus()
  })

  it('shows the server’s refusal inside the delete dialog', async () => {
    mockApi({
      'GET /backups': () => json(backupList([backup()])),
      'DELETE /backups/b1': () => problem(409, "backup 'nightly-1' is being uploaded; wait for it to finish", 'Conflict'),
    })
    renderWithClient(<BackupHistory />)
    const user = userEvent.setup()
    await user.click(await screen.findByRole('button', { name: 'Delete nightly-1' }))
    const dialog = screen.getByRole('dialog', { name: 'Delete nightly-1' })
    await user.click(within(dialog).getByRole('button', { name: 'Delete' }))
    expect(await within(dialog).findByRole('alert')).toHaveTextContent('is being uploaded')
  })

  it('shows a download link and the verify result next to the backup', async () => {
    mockApi({
      'GET /backups': () => json(backupList([backup()])),
      'GET /backups/b1/download': () =>
        json({ url: 'http://localhost:3000/backups/b1/file?expires=1&signature=s', expiresAt: '2026-01-15T13:00:00Z' }),
      'POST /backups/b1/verify': () =>
        json({ ok: true, backupId: 'b1', sha256: 'f'.repeat(64), layout: 'v1', problem: null, warnings: [], deep: false }),
    })
    const click = vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(() => {})
    renderWithClient(<BackupHistory />)
    const user = userEvent.setup()
    await user.click(await screen.findByRole('button', { name: 'Download nightly-1' }))
    expect(await screen.findByRole('link', { name: 'Download link for nightly-1' })).toHaveAttribute(
      'href',
      'http://localhost:3000/backups/b1/file?expires=1&signature=s',
    )
    // ...and the download itself starts.
    expect(click).toHaveBeenCalledTimes(1)
    expect((click.mock.contexts[0] as HTMLAnchorElement).href).toBe('http://localhost:3000/backups/b1/file?expires=1&signature=s')
    await user.click(screen.getByRole('button', { name: 'Verify nightly-1' }))
    expect(await screen.findByRole('status')).toHaveTextContent('Verified')
  })

  it('asks the API for the chosen filters and pages', async () => {
    const fetchMock = mockApi({
      'GET /backups': (_request, url) =>
        json({ items: [backup()], total: 25, limit: 10, offset: Number(url.searchParams.get('offset') ?? 0) }),
    })
    renderWithClient(<BackupHistory />)
    const user = userEvent.setup()
    await screen.findByRole('table')
    expect(screen.getByRole('button', { name: 'Previous page' })).toBeDisabled()
    await user.click(screen.getByRole('button', { name: 'Next page' }))
    await user.selectOptions(screen.getByRole('combobox', { name: 'Status filter' }), 'failed')
    await user.selectOptions(screen.getByRole('combobox', { name: 'Type filter' }), 'scheduled')
    await waitFor(() => {
      const last = requestsTo(fetchMock, 'GET /backups').at(-1)!
      expect(new URL(last.url).search).toBe('?limit=10&offset=0&status=failed&type=scheduled')
    })
    expect(requestsTo(fetchMock, 'GET /backups').some((r) => r.url.includes('offset=10'))).toBe(true)
  })
})
