"""Images that users attach to chat questions: checked, normalized and stored per principal.

`processing` turns untrusted upload bytes into a metadata-free PNG and a JPEG thumbnail (pure,
synchronous, CPU-bound); `service` stores them in the object store under the uploader; `vision`
hands them to the model that answers, or has a vision model describe them for a text-only one.
"""
