import { useEffect, useId, useRef, useState, type KeyboardEvent as ReactKeyboardEvent, type ReactNode, type RefObject } from 'react'
import { createPortal } from 'react-dom'

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])'

interface DialogProps {
  title: string
  onClose: () => void
  children: ReactNode
  /** Where focus starts; default the first focusable element in the dialog. */
  initialFocus?: RefObject<HTMLElement | null>
}

/**
 * A modal dialog: focus moves in and stays in (the rest of the page is inert), Escape closes,
 * and focus goes back to where it was.
 */
export function Dialog({ title, onClose, children, initialFocus }: DialogProps) {
  const titleId = useId()
  const panel = useRef<HTMLDivElement>(null)
  const close = useRef(onClose)
  useEffect(() => {
    close.current = onClose
  })

  // Where focus was when the dialog opened (read before any child effect moves it).
  const [opener] = useState(() => (document.activeElement instanceof HTMLElement ? document.activeElement : null))

  useEffect(() => {
    const root = panel.current?.closest('[data-dialog-root]')
    const target = initialFocus?.current ?? panel.current?.querySelector<HTMLElement>(FOCUSABLE)
    ;(target ?? panel.current)?.focus()
    const inerted: Element[] = []
    for (const child of Array.from(document.body.children)) {
      if (child !== root && !child.hasAttribute('inert') && child.tagName !== 'SCRIPT') {
        child.setAttribute('inert', '')
        inerted.push(child)
      }
    }
    // Escape closes even when focus has wandered (a click on the backdrop).
    const onEscape = (event: KeyboardEvent) => {
      if (event.key === 'Escape') {
        event.preventDefault()
        close.current()
      }
    }
    document.addEventListener('keydown', onEscape)
    return () => {
      document.removeEventListener('keydown', onEscape)
      for (const child of inerted) child.removeAttribute('inert')
      if (opener?.isConnected) opener.focus()
    }
    // Once per opening: initialFocus is a ref, onClose is read through `close`.
  }, [opener])

  // Tab and Shift+Tab cycle inside the dialog.
  function onKeyDown(event: ReactKeyboardEvent) {
    if (event.key !== 'Tab' || !panel.current) return
    const items = Array.from(panel.current.querySelectorAll<HTMLElement>(FOCUSABLE))
    if (!items.length) return
    const first = items[0]
    const last = items[items.length - 1]
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault()
      last.focus()
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault()
      first.focus()
    }
  }

  return createPortal(
    <div className="backdrop" data-dialog-root="">
      <div
        ref={panel}
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        tabIndex={-1}
        onKeyDown={onKeyDown}
      >
        <h2 id={titleId}>{title}</h2>
        {children}
      </div>
    </div>,
    document.body,
  )
}
