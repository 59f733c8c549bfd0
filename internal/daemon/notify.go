package daemon

import sddaemon "github.com/coreos/go-systemd/v22/daemon"

// notifyReady tells systemd (Type=notify units) that the socket is served.
func notifyReady() { sddaemon.SdNotify(false, sddaemon.SdNotifyReady) }
