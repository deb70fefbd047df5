import '@testing-library/jest-dom/vitest'
import { cleanup } from '@testing-library/react'
import { afterEach } from 'vitest'

// Browsers resolve the client's relative URLs ("/backups") against the page; Node's Request
// does not, so give it the jsdom page as base. Tests stub `fetch` at the network boundary.
const NodeRequest = globalThis.Request
class PageRequest extends NodeRequest {
  constructor(input: RequestInfo | URL, init?: RequestInit) {
    super(typeof input === 'string' ? new URL(input, window.location.href).href : input, init)
  }
}
globalThis.Request = PageRequest

afterEach(() => {
  cleanup()
})
