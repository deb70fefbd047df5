import { screen, waitFor } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import { App } from './App'
import { AuthProvider } from './auth'
import { backupList, json, mockApi, notConfigured, problem, renderWithClient, requestsTo } from './test-utils'

function renderApp() {
  return renderWithClient(
    <AuthProvider>
      <App />
    </AuthProvider>,
  )
}

describe('login', () => {
  it('shows the login form when there is no session, and the server’s reason when login fails', async () => {
    const fetchMock = mockApi({
      'GET /auth/me': () => problem(401, 'not signed in', 'Unauthorized'),
      'POST /auth/login': () => problem(401, 'wrong email or password', 'Unauthorized'),
    })
    renderApp()
    expect(await screen.findByRole('heading', { name: 'Sign in to Nexus Backup' })).toBeInTheDocument()

    const user = userEvent.setup()
    await user.type(screen.getByRole('textbox', { name: 'Email' }), 'admin@example.com')
    await user.type(screen.getByLabelText('Password'), 'nope')
    await user.click(screen.getByRole('button', { name: 'Log in' }))

    expect(await screen.findByRole('alert')).toHaveTextContent('wrong email or password')
    // Still on the login page: a wrong password is not a lost session.
    expect(screen.getByRole('heading', { name: 'Sign in to Nexus Backup' })).toBeInTheDocument()
    const [login] = requestsTo(fetchMock, 'POST /auth/login')
    expect(await login.json()).toEqual({ email: 'admin@example.com', password: 'nope' })
  })

  it('opens the page after login and sends the CSRF token on changes', async () => {
    const fetchMock = mockApi({
      'GET /auth/me': () => problem(401, 'not signed in', 'Unauthorized'),
      'POST /auth/login': () => json({ actor: 'admin@example.com', role: 'OWNER', kind: 'session', csrfToken: 'tok-1' }),
      'POST /auth/logout': () => new Response(null, { status: 204 }),
      'GET /backups': () => json(backupList([])),
      'GET /schedules': () => json([]),
      'GET /storage': () => json(notConfigured),
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
    })
    renderApp()
    const user = userEvent.setup()
    await user.type(await screen.findByRole('textbox', { name: 'Email' }), 'admin@example.com')
    await user.type(screen.getByLabelText('Password'), 'secret')
    await user.click(screen.getByRole('button', { name: 'Log in' }))

    expect(await screen.findByRole('heading', { level: 1, name: 'Backups' })).toBeInTheDocument()
    expect(screen.getByText('admin@example.com')).toBeInTheDocument()
    expect(await screen.findByText('No backups yet')).toBeInTheDocument()
    expect(await screen.findByText('No schedules yet')).toBeInTheDocument()

    await user.click(screen.getByRole('button', { name: 'Log out' }))
    expect(await screen.findByRole('heading', { name: 'Sign in to Nexus Backup' })).toBeInTheDocument()
    const [logout] = requestsTo(fetchMock, 'POST /auth/logout')
    expect(logout.headers.get('X-CSRF-Token')).toBe('tok-1')
  })

  it('goes back to the login page when the session ends (any 401)', async () => {
    let signedIn = true
    mockApi({
      'GET /auth/me': () => json({ actor: 'admin@example.com', role: 'OWNER', kind: 'session', csrfToken: 't' }),
      'GET /backups': () => (signedIn ? json(backupList([])) : problem(401, 'session expired', 'Unauthorized')),
      'GET /schedules': () => json([]),
      'GET /storage': () => json(notConfigured),
      'GET /audit': () => json({ items: [], total: 0, limit: 10, offset: 0 }),
      'POST /storage/test': () => {
        signedIn = false
        return problem(401, 'session expired', 'Unauthorized')
      },
    })
    renderApp()
    const user = userEvent.setup()
    await user.click(await screen.findByRole('button', { name: 'Test connection' }))
    await waitFor(() => expect(screen.getByRole('heading', { name: 'Sign in to Nexus Backup' })).toBeInTheDocument())
    expect(screen.getByRole('status')).toHaveTextContent('Your session has ended')
  })
})
