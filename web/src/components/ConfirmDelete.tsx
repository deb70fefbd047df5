import { useMutation } from '@tanstack/react-query'
import { useRef, type ReactNode } from 'react'
import { messageOf } from '../api/client'
import { Dialog } from './Dialog'

interface ConfirmDeleteProps {
  /** What is deleted, as the dialog names it: "Delete <name>". */
  name: string
  /** Says what goes and what stays. */
  children: ReactNode
  remove: () => Promise<unknown>
  onClose: () => void
  onDeleted: () => void
}

/** A confirmation dialog for a delete: Cancel has the focus, errors show where they happen. */
export function ConfirmDelete({ name, children, remove, onClose, onDeleted }: ConfirmDeleteProps) {
  const cancel = useRef<HTMLButtonElement>(null)
  const mutation = useMutation({ mutationFn: remove, onSuccess: onDeleted })
  return (
    <Dialog title={`Delete ${name}`} onClose={onClose} initialFocus={cancel}>
      {children}
      {mutation.isError && (
        <p role="alert" className="error">
          {messageOf(mutation.error)}
        </p>
      )}
      <div className="buttons end">
        <button type="button" ref={cancel} onClick={onClose}>
          Cancel
        </button>
        <button type="button" className="danger" onClick={() => mutation.mutate()} disabled={mutation.isPending}>
          Delete
        </button>
      </div>
    </Dialog>
  )
}
