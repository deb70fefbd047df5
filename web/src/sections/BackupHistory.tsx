import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { useRef, useState, type FormEvent } from 'react'
import { api, messageOf, unwrap, type Backup, type Schemas } from '../api/client'
import { refreshAfterChange } from '../api/queries'
import { ConfirmDelete } from '../components/ConfirmDelete'
import { Dialog } from '../components/Dialog'
import { Time } from '../components/Time'
import { durationBetween, formatBytes, statusLabel } from '../format'

const PAGE_SIZE = 10
type Status = Schemas['BackupStatus']
type Kind = Schemas['BackupType']

/** The members of an API enum as a menu list: the compiler refuses an unknown or a missing one. */
const everyOf =
  <T extends string>() =>
  <const L extends readonly T[]>(list: L & ([T] extends [L[number]] ? unknown : never)): L =>
    list
const STATUSES = everyOf<Status>()(['pending', 'in_progress', 'completed', 'failed'])
const TYPES = everyOf<Kind>()(['manual', 'scheduled', 'pre_update', 'pre_restore'])

const isRunning = (backup: Backup) => backup.status === 'pending' || backup.status === 'in_progress'

/** What an action on a row left to show next to it. */
type Notice =
  | { kind: 'link'; url: string; expiresAt: string }
  | { kind: 'verified'; text: string }
  | { kind: 'problem'; text: string }
  | { kind: 'busy'; text: string }

/** The backups, newest first, with filters, pages and the per-backup actions. */
export function BackupHistory() {
  const queryClient = useQueryClient()
  const [status, setStatus] = useState<Status | ''>('')
  const [type, setType] = useState<Kind | ''>('')
  const [offset, setOffset] = useState(0)
  const [notices, setNotices] = useState<Record<string, Notice>>({})
  const [restoring, setRestoring] = useState<Backup | null>(null)
  const [deleting, setDeleting] = useState<Backup | null>(null)
  const [restoreId, setRestoreId] = useState<string | null>(null)

  const list = useQuery({
    queryKey: ['backups', { status, type, offset }],
    queryFn: () =>
      unwrap(
        api.GET('/backups', {
          params: { query: { limit: PAGE_SIZE, offset, status: status || undefined, type: type || undefined } },
        }),
      ),
    placeholderData: keepPreviousData,
    // Keep running rows moving.
    refetchInterval: (query) => (query.state.data?.items.some(isRunning) ? 2000 : false),
  })

  const notify = (id: string, notice: Notice | null) =>
    setNotices((current) => {
      const next = { ...current }
      if (notice) next[id] = notice
      else delete next[id]
      return next
    })

  async function download(backup: Backup) {
    notify(backup.id, { kind: 'busy', text: 'Getting a download link…' })
    try {
      const link = await unwrap(
        api.GET('/backups/{backup_id}/download', { params: { path: { backup_id: backup.id } } }),
      )
      notify(backup.id, { kind: 'link', url: link.url, expiresAt: link.expiresAt })
      startDownload(link.url)
      void queryClient.invalidateQueries({ queryKey: ['audit'] })
    } catch (error) {
      notify(backup.id, { kind: 'problem', text: messageOf(error) })
    }
  }

  async function verify(backup: Backup) {
    notify(backup.id, { kind: 'busy', text: 'Verifying…' })
    try {
      const result = await unwrap(
        api.POST('/backups/{backup_id}/verify', { params: { path: { backup_id: backup.id } } }),
      )
      notify(
        backup.id,
        result.ok
          ? { kind: 'verified', text: verifiedText(result) }
          : { kind: 'problem', text: result.problem ?? 'the archive did not pass verification' },
      )
      void queryClient.invalidateQueries({ queryKey: ['audit'] })
    } catch (error) {
      notify(backup.id, { kind: 'problem', text: messageOf(error) })
    }
  }

  const page = list.data
  const total = page?.total ?? 0
  const filtered = status !== '' || type !== ''

  return (
    <section aria-labelledby="history-title" className="card">
      <h2 id="history-title">Backup History</h2>
      <div className="filters">
        <div className="field inline">
          <label htmlFor="history-status">Status filter</label>
          <select
            id="history-status"
            value={status}
            onChange={(event) => {
              setStatus(event.target.value as Status | '')
              setOffset(0)
            }}
          >
            <option value="">All statuses</option>
            {STATUSES.map((value) => (
              <option key={value} value={value}>
                {statusLabel(value)}
              </option>
            ))}
          </select>
        </div>
        <div className="field inline">
          <label htmlFor="history-type">Type filter</label>
          <select
            id="history-type"
            value={type}
            onChange={(event) => {
              setType(event.target.value as Kind | '')
              setOffset(0)
            }}
          >
            <option value="">All types</option>
            {TYPES.map((value) => (
              <option key={value} value={value}>
                {statusLabel(value)}
              </option>
            ))}
          </select>
        </div>
      </div>

      <RestoreProgress restoreId={restoreId} onDone={() => refreshAfterChange(queryClient)} />

      {list.isPending ? (
        <p role="status">Loading backups…</p>
      ) : list.isError ? (
        <p role="alert" className="error">
          Cannot load the backups: {messageOf(list.error)}
        </p>
      ) : page && page.items.length === 0 ? (
        <p className="empty">{filtered ? 'No backups match these filters' : 'No backups yet'}</p>
      ) : (
        <div className="table-scroll" role="region" aria-label="Backups (scrolls sideways)" tabIndex={0}>
          <table className="history">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Type</th>
                <th scope="col">Status</th>
                <th scope="col">Size</th>
                <th scope="col">Created</th>
                <th scope="col">Duration</th>
                <th scope="col">Cloud</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {page?.items.map((backup) => (
                <BackupRow
                  key={backup.id}
                  backup={backup}
                  notice={notices[backup.id]}
                  onDownload={() => void download(backup)}
                  onVerify={() => void verify(backup)}
                  onRestore={() => setRestoring(backup)}
                  onDelete={() => setDeleting(backup)}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {list.isError && page && <p className="muted">Showing the last list that loaded.</p>}

      <nav className="pager" aria-label="Backup pages">
        <button type="button" onClick={() => setOffset(Math.max(0, offset - PAGE_SIZE))} disabled={offset === 0}>
          Previous page
        </button>
        <span>
          {total === 0
            ? '0 backups'
            : `${offset + 1}–${Math.min(offset + PAGE_SIZE, total)} of ${total}`}
          {list.isFetching && !list.isPending ? ' · refreshing' : ''}
        </span>
        <button
          type="button"
          onClick={() => setOffset(offset + PAGE_SIZE)}
          disabled={offset + PAGE_SIZE >= total}
        >
          Next page
        </button>
      </nav>

      {restoring && (
        <RestoreDialog
          backup={restoring}
          onClose={() => setRestoring(null)}
          onStarted={(id) => {
            setRestoring(null)
            setRestoreId(id)
            refreshAfterChange(queryClient)
          }}
        />
      )}
      {deleting && (
        <DeleteDialog
          backup={deleting}
          onClose={() => setDeleting(null)}
          onDeleted={() => {
            setDeleting(null)
            notify(deleting.id, null)
            refreshAfterChange(queryClient)
          }}
        />
      )}
    </section>
  )
}

function verifiedText(result: Schemas['VerifyOut']): string {
  const parts = ['Verified']
  if (result.sha256) parts.push(`SHA-256 ${result.sha256.slice(0, 12)}…`)
  if (result.tablesChecked != null) parts.push(`${result.tablesChecked} tables checked`)
  if (result.warnings.length) parts.push(`warnings: ${result.warnings.join('; ')}`)
  return parts.join(', ')
}

/** Start the browser's download of a link (the server answers with an attachment). */
function startDownload(url: string) {
  const anchor = document.createElement('a')
  anchor.href = url
  anchor.download = ''
  anchor.rel = 'noopener'
  anchor.style.display = 'none'
  document.body.appendChild(anchor)
  try {
    anchor.click()
  } finally {
    anchor.remove()
  }
}

interface RowProps {
  backup: Backup
  notice: Notice | undefined
  onDownload: () => void
  onVerify: () => void
  onRestore: () => void
  onDelete: () => void
}

function BackupRow({ backup, notice, onDownload, onVerify, onRestore, onDelete }: RowProps) {
  const running = isRunning(backup)
  const completed = backup.status === 'completed'
  const percent = backup.progress?.percent
  return (
    <tr>
      <td className="name">
        <span className="mono">{backup.name}</span>
        {backup.description && <span className="sub">{backup.description}</span>}
        {backup.status === 'failed' && backup.errorMessage && (
          <span className="sub error">{backup.errorMessage}</span>
        )}
      </td>
      <td>{statusLabel(backup.type)}</td>
      <td>
        <span className={`badge ${backup.status}`}>{statusLabel(backup.status)}</span>
        {running && backup.progress?.phase && (
          <span className="sub">
            {backup.progress.phase}
            {percent != null ? ` ${percent}%` : ''}
          </span>
        )}
      </td>
      <td className="num">{formatBytes(backup.fileSize)}</td>
      <td>
        <Time value={backup.createdAt} />
      </td>
      <td>{running ? '—' : durationBetween(backup.startedAt, backup.completedAt)}</td>
      <td>
        <CloudCell backup={backup} />
      </td>
      <td className="actions">
        <div className="buttons">
          <button type="button" aria-label={`Download ${backup.name}`} onClick={onDownload} disabled={!completed}>
            Download
          </button>
          <button type="button" aria-label={`Verify ${backup.name}`} onClick={onVerify} disabled={!completed}>
            Verify
          </button>
          <button type="button" aria-label={`Restore ${backup.name}`} onClick={onRestore} disabled={!completed}>
            Restore
          </button>
          <button
            type="button"
            className="danger"
            aria-label={`Delete ${backup.name}`}
            onClick={onDelete}
            disabled={running}
            title={running ? 'A running backup cannot be deleted' : undefined}
          >
            Delete
          </button>
        </div>
        {notice && <RowNotice backup={backup} notice={notice} />}
      </td>
    </tr>
  )
}

function CloudCell({ backup }: { backup: Backup }) {
  switch (backup.syncStatus) {
    case 'synced':
      return (
        <span title={backup.cloudPath ?? undefined}>
          synced {backup.syncedAt && <Time value={backup.syncedAt} />}
        </span>
      )
    case 'pending':
    case 'syncing':
      return (
        <span>
          {backup.syncStatus}
          {backup.syncError && <span className="sub error">{backup.syncError}</span>}
        </span>
      )
    default:
      return <span className="muted">{backup.isCloudSynced ? 'synced' : 'local only'}</span>
  }
}

function RowNotice({ backup, notice }: { backup: Backup; notice: Notice }) {
  switch (notice.kind) {
    case 'busy':
      return <p className="notice muted">{notice.text}</p>
    case 'link':
      return (
        <p className="notice">
          <a href={notice.url} download rel="noopener">
            Download link for {backup.name}
          </a>{' '}
          <span className="muted">
            (expires <Time value={notice.expiresAt} />)
          </span>
        </p>
      )
    case 'verified':
      return (
        <p className="notice ok" role="status">
          {notice.text}
        </p>
      )
    case 'problem':
      return (
        <p className="notice error" role="alert">
          {notice.text}
        </p>
      )
  }
}

/** Typed confirmation: "Restore" stays disabled until the backup's exact name is typed. */
export function RestoreDialog({
  backup,
  onClose,
  onStarted,
}: {
  backup: Backup
  onClose: () => void
  onStarted: (restoreId: string) => void
}) {
  const [typed, setTyped] = useState('')
  const input = useRef<HTMLInputElement>(null)
  const restore = useMutation({
    mutationFn: () =>
      unwrap(
        api.POST('/backups/{backup_id}/restore', {
          params: { path: { backup_id: backup.id } },
          body: { confirm: typed, force: false },
        }),
      ),
    onSuccess: (record) => onStarted(record.id),
  })
  const matches = typed === backup.name

  function submit(event: FormEvent) {
    event.preventDefault()
    if (matches && !restore.isPending) restore.mutate()
  }

  return (
    <Dialog title={`Restore ${backup.name}`} onClose={onClose} initialFocus={input}>
      <form onSubmit={submit} className="stack" noValidate>
        <p>
          This replaces <strong>the database</strong> and <strong>the uploaded files</strong> with the
          contents of this backup. A pre_restore safety backup of the current state is taken first.
        </p>
        <div className="field">
          <label htmlFor="restore-confirm">Type the backup name to confirm</label>
          <input
            id="restore-confirm"
            ref={input}
            value={typed}
            autoComplete="off"
            spellCheck={false}
            onChange={(event) => setTyped(event.target.value)}
            aria-describedby="restore-confirm-hint"
          />
          <p id="restore-confirm-hint" className="hint">
            Type <span className="mono">{backup.name}</span> exactly.
          </p>
        </div>
        {restore.isError && (
          <p role="alert" className="error">
            {messageOf(restore.error)}
          </p>
        )}
        <div className="buttons end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="danger" disabled={!matches || restore.isPending}>
            Restore
          </button>
        </div>
      </form>
    </Dialog>
  )
}

function DeleteDialog({ backup, onClose, onDeleted }: { backup: Backup; onClose: () => void; onDeleted: () => void }) {
  return (
    <ConfirmDelete
      name={backup.name}
      remove={() => unwrap(api.DELETE('/backups/{backup_id}', { params: { path: { backup_id: backup.id } } }))}
      onClose={onClose}
      onDeleted={onDeleted}
    >
      <p>
        This deletes the archive of <span className="mono">{backup.name}</span>, here and in cloud storage. It
        cannot be undone.
      </p>
    </ConfirmDelete>
  )
}

/** A started restore, followed every second until it ends. */
function RestoreProgress({ restoreId, onDone }: { restoreId: string | null; onDone: () => void }) {
  const followed = useQuery({
    queryKey: ['restore', restoreId],
    queryFn: async () => {
      const record = await unwrap(
        api.GET('/restores/{restore_id}', { params: { path: { restore_id: restoreId! } } }),
      )
      if (record.status === 'completed' || record.status === 'failed') onDone()
      return record
    },
    enabled: restoreId !== null,
    refetchInterval: (query) =>
      query.state.data && ['completed', 'failed'].includes(query.state.data.status) ? false : 1000,
    staleTime: 0,
  })
  if (!restoreId) return null
  const record = followed.data
  if (!record) {
    return followed.isError ? (
      <p role="alert" className="error">
        Cannot follow the restore: {messageOf(followed.error)}
      </p>
    ) : (
      <p className="muted">Restore started…</p>
    )
  }
  if (record.status === 'failed') {
    return (
      <p role="alert" className="error">
        Restore failed: {record.errorMessage ?? 'no reason given'}
      </p>
    )
  }
  if (record.status === 'completed') {
    return (
      <p role="status" className="ok">
        Restore completed.
      </p>
    )
  }
  return (
    <p className="notice">
      Restore {statusLabel(record.status)}: {record.phase ?? 'starting'}
    </p>
  )
}
