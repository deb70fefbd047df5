import { useMutation, useQueryClient } from '@tanstack/react-query'
import { api, messageOf, unwrap } from '../api/client'
import { useStorage } from '../api/queries'
import { Time } from '../components/Time'

/** Where backups are copied off-site, how syncing goes, and a real round-trip test. */
export function CloudStorage() {
  const queryClient = useQueryClient()
  const storage = useStorage()
  const test = useMutation({
    mutationFn: () => unwrap(api.POST('/storage/test')),
    onSettled: () => {
      void queryClient.invalidateQueries({ queryKey: ['audit'] })
    },
  })

  const status = storage.data
  return (
    <section aria-labelledby="storage-title" className="card">
      <h2 id="storage-title">Cloud Storage</h2>
      {storage.isPending ? (
        <p role="status">Loading storage status…</p>
      ) : storage.isError ? (
        <p role="alert" className="error">
          Cannot load the storage status: {messageOf(storage.error)}
        </p>
      ) : status ? (
        <>
          <dl className="facts">
            <dt>State</dt>
            <dd>
              <span className={status.configured ? 'badge completed' : 'badge pending'}>
                {status.configured ? 'Configured' : 'Not configured'}
              </span>
            </dd>
            <dt>Provider</dt>
            <dd>{status.provider ?? '—'}</dd>
            <dt>Bucket</dt>
            <dd className="mono">{status.bucket ?? '—'}</dd>
            <dt>Endpoint host</dt>
            <dd className="mono">{status.endpointHost ?? '—'}</dd>
            {status.region && (
              <>
                <dt>Region</dt>
                <dd>{status.region}</dd>
              </>
            )}
            {status.prefix && (
              <>
                <dt>Prefix</dt>
                <dd className="mono">{status.prefix}</dd>
              </>
            )}
            <dt>Last successful sync</dt>
            <dd>
              <Time value={status.lastSuccessfulSyncAt} empty="never" />
            </dd>
            <dt>Pending syncs</dt>
            <dd>{status.pendingSyncs}</dd>
            {status.lastSyncError && (
              <>
                <dt>Last sync error</dt>
                <dd className="error">{status.lastSyncError}</dd>
              </>
            )}
          </dl>
          {!status.configured && (
            <p className="hint">
              Set the BACKUP_S3_* settings on the server (bucket, endpoint and keys) to copy backups off-site.
            </p>
          )}
        </>
      ) : null}
      <div className="buttons">
        <button type="button" onClick={() => test.mutate()} disabled={test.isPending}>
          Test connection
        </button>
        {test.isPending && <span className="muted">Testing…</span>}
      </div>
      {test.isSuccess &&
        (test.data.ok ? (
          <p role="status" className="ok">
            Connection OK{test.data.latencyMs != null ? ` (${test.data.latencyMs} ms)` : ''}: {test.data.detail}
          </p>
        ) : (
          <p role="alert" className="error">
            {test.data.detail}
          </p>
        ))}
      {test.isError && (
        <p role="alert" className="error">
          {messageOf(test.error)}
        </p>
      )}
    </section>
  )
}
