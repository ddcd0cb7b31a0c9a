import Foundation
import NIOCore

extension Hub {
    /// Sets or clears fault injection.
    func setFaults(_ faults: Faults) {
        state.withLockedValue { $0.faults = faults }
    }

    /// The faults in force now.
    var faults: Faults {
        state.withLockedValue { $0.faults }
    }

    /// Drops the connection of `key` now (fault injection). Returns whether one was open.
    func dropConnection(of key: IdentityKey) -> Bool {
        guard let connection = state.withLockedValue({ $0.sessions[key]?.connection }) else { return false }
        connection.close()
        return true
    }

    /// Makes the connection of `key` silently discard all traffic, in both directions, until
    /// the client gives it up (fault injection). Returns whether one was open.
    func discardTraffic(of key: IdentityKey) -> Bool {
        guard let connection = state.withLockedValue({ $0.sessions[key]?.connection }) else { return false }
        connection.discardTraffic()
        return true
    }

    /// The current acknowledgement delay fault.
    var acknowledgementDelay: TimeAmount? {
        let milliseconds = state.withLockedValue { $0.faults.acknowledgementDelayMilliseconds }
        return milliseconds > 0 ? .milliseconds(Int64(milliseconds)) : nil
    }
}
