// Child side of the systemd notify protocol (NOTIFY_SOCKET), as sd_notify(3).
//
// Owns: sending one datagram to $NOTIFY_SOCKET (path or '@' abstract name).
// Used by every Switchboard program to say READY=1 to whatever supervises it
// (the switchboard daemon, or systemd for the daemon itself). Returns false
// when NOTIFY_SOCKET is unset or the send failed; never blocks.
#pragma once

#include <string_view>

namespace sb {

bool SdNotify(std::string_view state);

}  // namespace sb
