import { useQuery } from '@tanstack/react-query'
import { api, messageOf, unwrap } from '../api/client'
import { Time } from '../components/Time'

/** The latest 10 audit entries: who did what to which backup, and how it ended. */
export function RecentActivity() {
  const audit = useQuery({
    queryKey: ['audit'],
    queryFn: () => unwrap(api.GET('/audit', { params: { query: { limit: 10 } } })),
    refetchInterval: 30_000,
  })
  return (
    <section aria-labelledby="activity-title" className="card">
      <h2 id="activity-title">Recent activity</h2>
      {audit.isPending ? (
        <p role="status">Loading activity…</p>
      ) : audit.isError ? (
        <p role="alert" className="error">
          Cannot load the activity: {messageOf(audit.error)}
        </p>
      ) : audit.data.items.length === 0 ? (
        <p className="empty">No activity yet</p>
      ) : (
        <div className="table-scroll" role="region" aria-label="Audit entries (scrolls sideways)" tabIndex={0}>
          <table className="activity">
            <thead>
              <tr>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Actor</th>
                <th scope="col">Time</th>
              </tr>
            </thead>
            <tbody>
              {audit.data.items.map((entry) => (
                <tr key={entry.id}>
                  <td className="mono">{entry.action}</td>
                  <td>{entry.target ?? '—'}</td>
                  <td>
                    <span className={`badge ${entry.outcome}`}>{entry.outcome}</span>
                  </td>
                  <td>{entry.actor}</td>
                  <td>
                    <Time value={entry.at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}
