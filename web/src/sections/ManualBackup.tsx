import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { useEffect, useState, type FormEvent } from 'react'
import { api, messageOf, unwrap, type Backup } from '../api/client'
import { refreshAfterChange, useStorage } from '../api/queries'
import { durationBetween, formatBytes } from '../format'

const RUNNING = new Set(['pending', 'in_progress'])

/** Start a backup now and follow it (GET /backups/{id} every second) until it ends. */
export function ManualBackup() {
  const queryClient = useQueryClient()
  const storage = useStorage()
  const [name, setName] = useState('')
  const [description, setDescription] = useState('')
  const [syncToCloud, setSyncToCloud] = useState(false)
  const [backupId, setBackupId] = useState<string | null>(null)

  const configured = storage.data?.configured === true
  const create = useMutation({
    mutationFn: () =>
      unwrap(
        api.POST('/backups', {
          body: {
            name: name.trim() || null,
            description: description.trim() || null,
            type: 'manual',
            syncToCloud: syncToCloud && configured,
          },
        }),
      ),
    onSuccess: (backup) => {
      queryClient.setQueryData(['backup', backup.id], backup)
      setBackupId(backup.id)
      setName('')
      setDescription('')
      refreshAfterChange(queryClient)
    },
  })

  const followed = useQuery({
    queryKey: ['backup', backupId],
    queryFn: () => unwrap(api.GET('/backups/{backup_id}', { params: { path: { backup_id: backupId! } } })),
    enabled: backupId !== null,
    refetchInterval: (query) => (query.state.data && !RUNNING.has(query.state.data.status) ? false : 1000),
    refetchIntervalInBackground: true,
    staleTime: 0,
  })
  const backup = backupId ? followed.data : undefined
  const running = backup !== undefined && RUNNING.has(backup.status)

  // When it ends, the history, storage and audit change.
  const finished = backup && !running ? backup.status : null
  useEffect(() => {
    if (finished) refreshAfterChange(queryClient)
  }, [finished, queryClient])

  function submit(event: FormEvent) {
    event.preventDefault()
    create.mutate()
  }

  const hintId = 'manual-sync-hint'
  return (
    <section aria-labelledby="manual-title" className="card">
      <h2 id="manual-title">Manual Backup</h2>
      <p className="muted">Archives the database and the uploaded files now, as one verified file.</p>
      <form onSubmit={submit} noValidate className="stack">
        <div className="field">
          <label htmlFor="manual-name">Backup name</label>
          <input
            id="manual-name"
            value={name}
            onChange={(event) => setName(event.target.value)}
            aria-describedby="manual-name-hint"
            autoComplete="off"
            maxLength={128}
          />
          <p id="manual-name-hint" className="hint">
            Optional. Letters, digits, dots, dashes and underscores; empty means
            gk-nexus-backup-date-time.
          </p>
        </div>
        <div className="field">
          <label htmlFor="manual-description">Description</label>
          <textarea
            id="manual-description"
            rows={2}
            value={description}
            onChange={(event) => setDescription(event.target.value)}
            maxLength={2000}
          />
        </div>
        <div className="check">
          <input
            id="manual-sync"
            type="checkbox"
            checked={syncToCloud && configured}
            disabled={!configured}
            aria-describedby={configured ? undefined : hintId}
            onChange={(event) => setSyncToCloud(event.target.checked)}
          />
          <label htmlFor="manual-sync">Sync to cloud</label>
          {!configured && (
            <p id={hintId} className="hint">
              {storage.isPending
                ? 'Checking cloud storage…'
                : storage.isError
                  ? `Cloud storage status unavailable: ${messageOf(storage.error)}`
                  : 'Cloud storage is not configured (see Cloud Storage below).'}
            </p>
          )}
        </div>
        <div>
          <button type="submit" className="primary" disabled={create.isPending || running}>
            Create backup
          </button>
          {create.isPending && <span className="muted"> Starting…</span>}
        </div>
        {create.isError && (
          <p role="alert" className="error">
            {messageOf(create.error)}
          </p>
        )}
      </form>
      {backupId && followed.isError && !backup && (
        <p role="alert" className="error">
          Cannot follow the backup: {messageOf(followed.error)}
        </p>
      )}
      {backup && <BackupOutcome backup={backup} />}
    </section>
  )
}

function BackupOutcome({ backup }: { backup: Backup }) {
  if (RUNNING.has(backup.status)) {
    const percent = backup.progress?.percent ?? null
    const phase = backup.progress?.phase ?? (backup.status === 'pending' ? 'waiting to start' : 'starting')
    const done = backup.progress?.bytesDone ?? 0
    const total = backup.progress?.bytesTotal ?? null
    return (
      <div className="progress-box">
        <p>
          Backup <strong>{backup.name}</strong> is running:
        </p>
        <p className="phase">{phase}</p>
        <div
          className="progress"
          role="progressbar"
          aria-label="Backup progress"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={percent ?? 0}
          aria-valuetext={percent === null ? `${formatBytes(done)} done` : `${percent}%`}
        >
          <div className={percent === null ? 'bar indeterminate' : 'bar'} style={{ width: `${percent ?? 100}%` }} />
        </div>
        <p className="muted">
          {percent === null ? `${formatBytes(done)} done` : `${percent}% (${formatBytes(done)} of ${formatBytes(total)})`}
        </p>
      </div>
    )
  }
  if (backup.status === 'failed') {
    return (
      <p role="alert" className="error">
        Backup {backup.name} failed: {backup.errorMessage ?? 'no reason given'}
      </p>
    )
  }
  return (
    <p role="status" className="ok">
      Backup {backup.name} completed: {formatBytes(backup.fileSize)} in{' '}
      {durationBetween(backup.startedAt, backup.completedAt)}
      {backup.syncRequested ? ` (cloud sync: ${backup.syncStatus})` : ''}.
    </p>
  )
}
