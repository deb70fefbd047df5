import { useState } from 'react'
import { messageOf } from './api/client'
import { useAuth } from './auth'
import { Login } from './Login'
import { BackupHistory } from './sections/BackupHistory'
import { CloudStorage } from './sections/CloudStorage'
import { ManualBackup } from './sections/ManualBackup'
import { RecentActivity } from './sections/RecentActivity'
import { Schedules } from './sections/Schedules'

/** The admin page: the login form until signed in, then the four sections and the activity. */
export function App() {
  const { state } = useAuth()
  if (state.status === 'loading') {
    return (
      <p className="page-loading" role="status">
        Loading…
      </p>
    )
  }
  if (state.status === 'signedOut') return <Login notice={state.problem} />
  return (
    <>
      <TopBar actor={state.me.actor} role={state.me.role} />
      <main className="page">
        <h1>Backups</h1>
        <ManualBackup />
        <BackupHistory />
        <Schedules />
        <CloudStorage />
        <RecentActivity />
      </main>
    </>
  )
}

function TopBar({ actor, role }: { actor: string; role: string }) {
  const { logout } = useAuth()
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)

  async function onLogout() {
    setBusy(true)
    setError(null)
    try {
      await logout()
    } catch (failure) {
      setError(messageOf(failure))
      setBusy(false)
    }
  }

  return (
    <header className="topbar">
      <span className="brand">Nexus Backup</span>
      <span className="who">
        <span className="actor">{actor}</span> <span className="role">({role})</span>
      </span>
      <button type="button" onClick={onLogout} disabled={busy}>
        Log out
      </button>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </header>
  )
}
