import { useQueryClient } from '@tanstack/react-query'
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react'
import { ApiError, api, setCsrfToken, setUnauthorizedHandler, unwrap, type Me } from './api/client'

type AuthState =
  | { status: 'loading' }
  | { status: 'signedOut'; problem?: string }
  | { status: 'signedIn'; me: Me }

interface Auth {
  state: AuthState
  login: (email: string, password: string) => Promise<void>
  logout: () => Promise<void>
}

const AuthContext = createContext<Auth | null>(null)

/** Who is signed in: asks /auth/me once, and goes back to the login page on any 401. */
export function AuthProvider({ children }: { children: ReactNode }) {
  const queryClient = useQueryClient()
  const [state, setState] = useState<AuthState>({ status: 'loading' })

  const signOut = useCallback(
    (problem?: string) => {
      setCsrfToken(null)
      queryClient.clear()
      setState({ status: 'signedOut', problem })
    },
    [queryClient],
  )

  useEffect(() => {
    setUnauthorizedHandler(() => signOut('Your session has ended: sign in again.'))
    let current = true
    unwrap(api.GET('/auth/me'))
      .then((me) => {
        if (!current) return
        setCsrfToken(me.csrfToken)
        setState({ status: 'signedIn', me })
      })
      .catch((error: unknown) => {
        if (!current) return
        const quiet = error instanceof ApiError && error.status === 401
        setState({ status: 'signedOut', problem: quiet ? undefined : (error as Error).message })
      })
    return () => {
      current = false
      setUnauthorizedHandler(() => {})
    }
  }, [signOut])

  const login = useCallback(async (email: string, password: string) => {
    const me = await unwrap(api.POST('/auth/login', { body: { email, password } }))
    setCsrfToken(me.csrfToken)
    setState({ status: 'signedIn', me })
  }, [])

  const logout = useCallback(async () => {
    try {
      await unwrap(api.POST('/auth/logout'))
    } finally {
      signOut()
    }
  }, [signOut])

  const value = useMemo(() => ({ state, login, logout }), [state, login, logout])
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext)
  if (!auth) throw new Error('useAuth needs an <AuthProvider>')
  return auth
}
