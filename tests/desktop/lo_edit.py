"""Open a document in a running LibreOffice, append a paragraph, save it in place, close it.

Run with the system Python (Debian's python3-uno), not the project's virtual environment:
``python3 lo_edit.py PORT FILE TEXT``. LibreOffice must listen on ``socket,port=PORT;urp``.
Exits 0 once ``store()`` returned, so the caller checks what reached the server.
"""

import sys
import time

import uno  # type: ignore[import-not-found]
from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]


def prop(name, value):
    p = PropertyValue()
    p.Name = name
    p.Value = value
    return p


def connect(port):
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            return resolver.resolve(
                f"uno:socket,host=127.0.0.1,port={port};urp;StarOffice.ComponentContext"
            )
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main():
    port, path, text = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = connect(port)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    url = uno.systemPathToFileUrl(path)
    doc = desktop.loadComponentFromURL(url, "_blank", 0, (prop("Hidden", True),))
    if doc is None:
        sys.exit(f"LibreOffice could not open {path}")
    body = doc.getText()
    body.insertString(body.getEnd(), "\n" + text, False)
    doc.store()
    doc.close(True)


if __name__ == "__main__":
    main()
