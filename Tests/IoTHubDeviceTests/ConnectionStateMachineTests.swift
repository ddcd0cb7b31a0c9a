import Foundation
import IoTHubProtocol
import Testing

@testable import IoTHubDevice

/// The connection lifecycle without a hub: each test drives the machine through events and
/// checks the actions it returns and the state it is left in.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<StandInConnection, Int>

    /// A connection as the machine sees it: an object it holds and hands back.
    final class StandInConnection: Sendable {}

    let start = Moment(date: Date(timeIntervalSince1970: 1_700_000_000), instant: .now)
    let retryInterval = Duration.milliseconds(200)

    func machine(retries: Bool = true) -> Machine {
        Machine(clientId: "dev1", retriesConnection: retries, retryInterval: retryInterval, at: start)
    }

    // MARK: Helpers

    /// Begins attempt `id` and sends its CONNECT: the connection it uses.
    @discardableResult
    func begin(_ machine: inout Machine, _ id: Int, at now: Moment, renewAt: Date? = nil) throws -> StandInConnection {
        let action = machine.beginAttempt(id, at: now) { StandInConnection() }
        guard case .proceed(let connection, _, _) = action else {
            Issue.record("attempt \(id) did not proceed: \(action)")
            throw Abandoned()
        }
        let sent = machine.expectConnack(id, renewCredentialsAt: renewAt)
        #expect(sent)
        return connection
    }

    struct Abandoned: Error {}

    /// Settles attempt `id` with `outcome` and finishes it with the settled result.
    func finish(_ machine: inout Machine, _ id: Int, outcome: ConnackOutcome, at now: Moment)
        -> Machine.AttemptFinishedAction
    {
        let connection = machine.connection ?? StandInConnection()
        let (_, result) = machine.settle(
            id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(10))
        return machine.finishAttempt(id, result: result, at: now)
    }

    /// A machine connected at `start` (attempt 1, waiter 1).
    func connected(retries: Bool = true, renewAt: Date? = nil) throws -> Machine {
        var machine = machine(retries: retries)
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { throw Abandoned() }
        try begin(&machine, attempt.id, at: start, renewAt: renewAt)
        machine.connackReceived(returnCode: 0)
        let answer = machine.takeConnackOutcome(attempt.id)
        #expect(answer == .accepted)
        guard case .connected = finish(&machine, attempt.id, outcome: .accepted, at: start) else { throw Abandoned() }
        #expect(machine.phase == .connected)
        return machine
    }

    // MARK: Connecting

    @Test func aConnectStartsOneAttemptThatEndsConnected() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else {
            Issue.record("no attempt")
            return
        }
        #expect(attempt.purpose == .connect)
        #expect(machine.phase == .connecting)
        let later = start.advanced(by: .milliseconds(50))
        let begun = machine.beginAttempt(attempt.id, at: later) { StandInConnection() }
        guard case .proceed(let connection, false, let change) = begun else {
            Issue.record("\(begun)")
            return
        }
        #expect(change.state == .connecting, "every attempt is announced")
        let sent = machine.expectConnack(attempt.id, renewCredentialsAt: nil)
        #expect(sent)
        let early = machine.takeConnackOutcome(attempt.id)
        #expect(early == nil, "nothing answered yet")
        machine.connackReceived(returnCode: 0)
        let answer = machine.takeConnackOutcome(attempt.id)
        #expect(answer == .accepted)
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: .accepted, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .openForPublishing(let opened) = cleanup, opened === connection, case .success = result else {
            Issue.record("\(cleanup) \(result)")
            return
        }
        guard
            case .connected(let connectedChange, let waiters, .none) = machine.finishAttempt(
                attempt.id, result: result, at: later)
        else {
            Issue.record("not connected")
            return
        }
        #expect(connectedChange?.state == .connected)
        #expect(connectedChange?.since == later.date)
        #expect(waiters == [1])
        #expect(machine.phase == .connected)
        #expect(machine.currentConnection?.connection === connection)
        #expect(machine.reconnectionAttempts == 0, "a first connect is not a reconnection")
    }

    @Test func concurrentConnectCallsShareOneAttempt() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else {
            Issue.record("no attempt")
            return
        }
        guard case .joinedAttempt = machine.connect(waiter: 2, at: start) else {
            Issue.record("a second attempt")
            return
        }
        try begin(&machine, attempt.id, at: start)
        guard case .joinedAttempt = machine.connect(waiter: 3, at: start) else {
            Issue.record("a second attempt")
            return
        }
        machine.connackReceived(returnCode: 0)
        _ = machine.takeConnackOutcome(attempt.id)
        guard case .connected(_, let waiters, _) = finish(&machine, attempt.id, outcome: .accepted, at: start) else {
            Issue.record("not connected")
            return
        }
        #expect(waiters == [1, 2, 3])
    }

    @Test func aConnectWhenConnectedOrShutDownIsAnsweredAtOnce() throws {
        var machine = try connected()
        guard case .answer(4, .finished(.success)) = machine.connect(waiter: 4, at: start) else {
            Issue.record("connected: not answered at once")
            return
        }
        guard case .close = machine.disconnect() else {
            Issue.record("nothing to close")
            return
        }
        _ = machine.disconnected(at: start)
        machine.shutDown(at: start)
        guard case .answer(5, .finished(.failure(let error))) = machine.connect(waiter: 5, at: start) else {
            Issue.record("shut down: not answered at once")
            return
        }
        #expect(error == .clientError("the client has been shut down"))
    }

    @Test(arguments: [Int32(4), 5]) func refusedCredentialsFailTheConnect(code: Int32) throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        machine.connackReceived(returnCode: code)
        let answer = machine.takeConnackOutcome(attempt.id)
        let outcome = try #require(answer)
        #expect(outcome == .refused(returnCode: code))
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .close(let closed) = cleanup, closed === connection else {
            Issue.record("the refused connection is not closed: \(cleanup)")
            return
        }
        guard case .failure(.credentialError(let detail)) = result else {
            Issue.record("\(result)")
            return
        }
        #expect(detail.contains("dev1") && detail.contains("CONNACK \(code)"))
        guard
            case .failed(.credentialError, let change, [1]) = machine.finishAttempt(
                attempt.id, result: result, at: start)
        else {
            Issue.record("not failed")
            return
        }
        #expect(change?.state == .disconnected)
        #expect(machine.phase == .disconnected)
        #expect(machine.lastError?.code == "CredentialError")
    }

    @Test(arguments: [Int32(1), 2, 3]) func otherConnackCodesAreConnectionFailures(code: Int32) throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        machine.connackReceived(returnCode: code)
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: .refused(returnCode: code), connection: connection, endpoint: "hub:8883",
            timeout: .seconds(1))
        guard case .close = cleanup, case .failure(.connectionFailedError(let detail)) = result else {
            Issue.record("\(cleanup) \(result)")
            return
        }
        #expect(detail == "the hub refused the connection (CONNACK \(code))")
    }

    @Test func theConnectionClosingBeforeTheConnackFailsTheAttemptWithItsReason() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        guard
            case .none = machine.connectionEnded(
                requested: false, reason: "the hub's TLS certificate was not accepted", at: start)
        else {
            Issue.record("handled as a lost connection")
            return
        }
        let answer = machine.takeConnackOutcome(attempt.id)
        let outcome = try #require(answer)
        #expect(outcome == .connectionClosed(reason: "the hub's TLS certificate was not accepted"))
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .stopNetworkThread = cleanup, case .failure(.connectionFailedError(let detail)) = result else {
            Issue.record("\(cleanup) \(result)")
            return
        }
        #expect(detail == "cannot connect to hub:8883: the hub's TLS certificate was not accepted")
        let (_, withoutReason) = machine.settle(
            attempt.id, outcome: .connectionClosed(reason: nil), connection: connection, endpoint: "hub:8883",
            timeout: .seconds(1))
        guard case .failure(.connectionFailedError(let plain)) = withoutReason else { return }
        #expect(plain == "the connection to hub:8883 closed before the hub answered CONNECT")
    }

    @Test func aConnackWaitTimesOutUnlessTheAnswerCameMeanwhile() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        let timedOut = machine.connackTimedOut(attempt.id)
        #expect(timedOut == .timedOut)
        machine.connackReceived(returnCode: 0)
        let late = machine.takeConnackOutcome(attempt.id)
        #expect(late == nil, "a CONNACK after the timeout does not count")
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: .timedOut, connection: connection, endpoint: "hub:8883", timeout: .seconds(10))
        guard case .close = cleanup, case .failure(.operationTimeout(let detail)) = result else {
            Issue.record("\(cleanup) \(result)")
            return
        }
        #expect(detail.contains("no CONNACK from hub:8883"))

        var answered = self.machine()
        guard case .startAttempt(let second) = answered.connect(waiter: 1, at: start) else { return }
        try begin(&answered, second.id, at: start)
        answered.connackReceived(returnCode: 0)
        let outcome = answered.connackTimedOut(second.id)
        #expect(outcome == .accepted, "the answer that came first counts")
    }

    @Test func aFailedConnectionPassesItsErrorOn() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        let failure = IoTHubError.connectionFailedError("cannot connect to hub:8883: Connection refused")
        let outcome = machine.connectFailed(attempt.id, error: failure)
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .stopNetworkThread = cleanup, case .failure(let error) = result else { return }
        #expect(error == failure)
        guard case .failed(failure, _, [1]) = machine.finishAttempt(attempt.id, result: result, at: start) else {
            Issue.record("not failed")
            return
        }
    }

    // MARK: Losing the connection

    @Test func aConnectionLostAfterASecondIsReconnectedAtOnce() throws {
        var machine = try connected()
        let later = start.advanced(by: .seconds(5))
        guard
            case .reconnect(let error, let change, let attempt?, false) = machine.connectionEnded(
                requested: false, reason: nil, at: later)
        else {
            Issue.record("not reconnected at once")
            return
        }
        #expect(error == .connectionDroppedError("the connection to the hub was lost"))
        #expect(change?.state == .reconnecting)
        #expect(change?.reason == error)
        #expect(machine.lastError == error)
        #expect(attempt.purpose == .reconnect)
        #expect(attempt.previousConnection === machine.connection, "its network thread is joined first")
        guard case .answer(2, .waitForReconnect) = machine.connect(waiter: 2, at: later) else {
            Issue.record("a connect while reconnecting does not wait for the reconnection")
            return
        }
        try begin(&machine, attempt.id, at: later)
        #expect(machine.reconnectionAttempts == 1)
        machine.connackReceived(returnCode: 0)
        guard
            case .connected(let connectedChange, [], .none) = finish(
                &machine, attempt.id, outcome: .accepted, at: later)
        else {
            Issue.record("not connected")
            return
        }
        #expect(connectedChange?.state == .connected)
    }

    @Test func aConnectionLostWithinASecondOfItsConnackIsNotRetakenAtOnce() throws {
        var machine = try connected()
        let soon = start.advanced(by: .milliseconds(500))
        guard
            case .reconnect(let error, _, nil, true) = machine.connectionEnded(requested: false, reason: nil, at: soon)
        else {
            Issue.record("reconnected at once")
            return
        }
        #expect("\(error)".contains("500 ms after accepting it; is another client connected as dev1?"), "\(error)")
        #expect(machine.timersDue(at: soon.advanced(by: .milliseconds(100))).actions.isEmpty)
        let (actions, _) = machine.timersDue(at: soon.advanced(by: retryInterval))
        guard case .startAttempt(let attempt, nil)? = actions.first, attempt.purpose == .reconnect else {
            Issue.record("no reconnect after the retry interval: \(actions)")
            return
        }
    }

    @Test func withoutConnectionRetryALostConnectionStaysLostAndFailsWhatIsPending() throws {
        var machine = try connected(retries: false)
        let connection = machine.connection
        guard
            case .giveUp(let error, let change, let pending, _) = machine.connectionEnded(
                requested: false, reason: nil, at: start.advanced(by: .seconds(5)))
        else {
            Issue.record("not given up")
            return
        }
        #expect(error.code == "ConnectionDroppedError")
        #expect(change?.state == .disconnected)
        #expect(pending === connection, "the operations waiting on the connection fail")
        #expect(machine.phase == .disconnected)
        #expect(machine.timersDue(at: start.advanced(by: .seconds(60))).actions.isEmpty, "no retry")
    }

    @Test func aRequestedCloseIsNotALoss() throws {
        var machine = try connected()
        guard case .none = machine.connectionEnded(requested: true, reason: nil, at: start.advanced(by: .seconds(5)))
        else {
            Issue.record("handled as a loss")
            return
        }
        #expect(machine.phase == .connected)
    }

    @Test func refusedCredentialsEndTheReconnectsWithoutRetry() throws {
        var machine = try connected()
        let later = start.advanced(by: .seconds(5))
        guard case .reconnect(_, _, let attempt?, _) = machine.connectionEnded(requested: false, reason: nil, at: later)
        else { return }
        try begin(&machine, attempt.id, at: later)
        machine.connackReceived(returnCode: 5)
        guard
            case .gaveUp(.credentialError, let change, true, let connection, []) = finish(
                &machine, attempt.id, outcome: .refused(returnCode: 5), at: later)
        else {
            Issue.record("not given up")
            return
        }
        #expect(connection != nil)
        #expect(change?.state == .disconnected)
        #expect(
            machine.timersDue(at: later.advanced(by: .seconds(60))).actions.isEmpty,
            "no retry after refused credentials")
    }

    @Test func aFailedReconnectIsRetriedAfterTheInterval() throws {
        var machine = try connected()
        let later = start.advanced(by: .seconds(5))
        guard case .reconnect(_, _, let attempt?, _) = machine.connectionEnded(requested: false, reason: nil, at: later)
        else { return }
        try begin(&machine, attempt.id, at: later)
        guard
            case .retryLater(.connectionFailedError, []) = finish(
                &machine, attempt.id, outcome: .connectionClosed(reason: nil), at: later)
        else {
            Issue.record("not retried")
            return
        }
        #expect(machine.phase == .reconnecting)
        #expect(machine.timersDue(at: later.advanced(by: .milliseconds(100))).actions.isEmpty)
        let (actions, _) = machine.timersDue(at: later.advanced(by: retryInterval))
        guard case .startAttempt(let next, _)? = actions.first else {
            Issue.record("no second attempt")
            return
        }
        try begin(&machine, next.id, at: later)
        #expect(machine.reconnectionAttempts == 2)
    }

    @Test func aConnectionLostBetweenItsConnackAndTheEndOfTheAttemptIsHandledAsLost() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        machine.connackReceived(returnCode: 0)
        let answer = machine.takeConnackOutcome(attempt.id)
        let outcome = try #require(answer)
        let (_, result) = machine.settle(
            attempt.id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .none = machine.connectionEnded(requested: false, reason: nil, at: start) else { return }
        guard
            case .connected(_, [1], .reconnect(_, let change, nil, true)) = machine.finishAttempt(
                attempt.id, result: result, at: start)
        else {
            Issue.record("the loss was missed")
            return
        }
        #expect(change?.state == .reconnecting)
        #expect(machine.phase == .reconnecting)
    }

    /// The CONNACK and the end of the connection in one read (the hub accepts, then the
    /// connection ends before the attempt has taken the CONNACK): still lost, not connected.
    @Test func aConnectionThatEndsRightAfterItsConnackIsHandledAsLost() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        machine.connackReceived(returnCode: 0)
        guard case .none = machine.connectionEnded(requested: false, reason: nil, at: start) else { return }
        let answer = machine.takeConnackOutcome(attempt.id)
        let outcome = try #require(answer)
        let (_, result) = machine.settle(
            attempt.id, outcome: outcome, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard
            case .connected(_, [1], .reconnect(_, _, nil, true)) = machine.finishAttempt(
                attempt.id, result: result, at: start)
        else {
            Issue.record("the loss was missed: the client would report connected with no connection")
            return
        }
        #expect(machine.phase == .reconnecting)
    }

    // MARK: Renewing credentials

    @Test func theRenewalIsDueAtTheTimeTheAttemptGave() throws {
        var machine = try connected(renewAt: start.date.addingTimeInterval(3000))
        #expect(machine.timersDue(at: start.advanced(by: .seconds(2999))).actions.isEmpty)
        let (actions, _) = machine.timersDue(at: start.advanced(by: .seconds(3000)))
        guard case .startAttempt(let attempt, let change)? = actions.first else {
            Issue.record("no renewal: \(actions)")
            return
        }
        #expect(attempt.purpose == .renewal)
        #expect(attempt.previousConnection === machine.connection, "the connection is closed first")
        #expect(change?.state == .reconnecting)
        #expect(machine.phase == .renewingCredentials)
    }

    @Test func aDropDuringARenewalLeavesTheRenewalToReconnect() throws {
        var machine = try connected()
        let later = start.advanced(by: .seconds(5))
        guard case .startAttempt(let renewal, _) = machine.renewCredentials(waiter: 7, at: later) else {
            Issue.record("no renewal")
            return
        }
        guard case .none = machine.connectionEnded(requested: false, reason: nil, at: later) else {
            Issue.record("a drop during the renewal was handled as a loss")
            return
        }
        #expect(machine.phase == .renewingCredentials)
        guard case .joinedAttempt = machine.connect(waiter: 8, at: later) else {
            Issue.record("a connect during the renewal does not join it")
            return
        }
        try begin(&machine, renewal.id, at: later)
        #expect(machine.reconnectionAttempts == 1, "a renewal counts as a reconnection attempt")
        machine.connackReceived(returnCode: 0)
        guard case .connected(let change, [7, 8], .none) = finish(&machine, renewal.id, outcome: .accepted, at: later)
        else {
            Issue.record("not connected")
            return
        }
        #expect(change?.state == .connected)
    }

    @Test func aRenewalWhoseConnectionDropsBeforeItsConnackIsRetriedAsAReconnect() throws {
        var machine = try connected()
        let later = start.advanced(by: .seconds(5))
        guard case .startAttempt(let renewal, _) = machine.renewCredentials(waiter: nil, at: later) else { return }
        try begin(&machine, renewal.id, at: later)
        guard case .none = machine.connectionEnded(requested: false, reason: nil, at: later) else { return }
        let answer = machine.takeConnackOutcome(renewal.id)
        let outcome = try #require(answer)
        guard case .retryLater(.connectionFailedError, []) = finish(&machine, renewal.id, outcome: outcome, at: later)
        else {
            Issue.record("not retried")
            return
        }
        #expect(machine.phase == .reconnecting)
        #expect(machine.since == later.date, "renewing and reconnecting are one step for applications")
        let (actions, _) = machine.timersDue(at: later.advanced(by: retryInterval))
        guard case .startAttempt(let reconnect, _)? = actions.first else {
            Issue.record("no reconnect")
            return
        }
        #expect(reconnect.purpose == .reconnect)
    }

    @Test func refusedCredentialsEndARenewal() throws {
        var machine = try connected()
        guard case .startAttempt(let renewal, _) = machine.renewCredentials(waiter: nil, at: start) else { return }
        try begin(&machine, renewal.id, at: start)
        guard
            case .gaveUp(.credentialError, let change, false, _, []) = finish(
                &machine, renewal.id, outcome: .refused(returnCode: 4), at: start)
        else {
            Issue.record("not given up")
            return
        }
        #expect(change?.state == .disconnected)
        #expect(machine.timersDue(at: start.advanced(by: .seconds(60))).actions.isEmpty)
    }

    @Test func noRenewalWithoutAConnection() {
        var machine = machine()
        guard case .notConnected(9) = machine.renewCredentials(waiter: 9, at: start) else {
            Issue.record("renewed while disconnected")
            return
        }
        #expect(machine.phase == .disconnected)
    }

    @Test func aNewTokenIsRequested120SecondsBeforeTheOldOneExpires() {
        var machine = machine()
        machine.newTokenSupplied(expiringAt: start.date.addingTimeInterval(600), at: start)
        let (early, next) = machine.timersDue(at: start.advanced(by: .seconds(479)))
        #expect(early.isEmpty)
        #expect(next == start.instant + .seconds(480))
        let (due, _) = machine.timersDue(at: start.advanced(by: .seconds(480)))
        guard case .requestNewToken? = due.first else {
            Issue.record("no request")
            return
        }
    }

    // MARK: disconnect() and shutdown()

    @Test func disconnectDuringAConnectEndsTheConnackWaitAndTheAttempt() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        guard case .close(let closing, []) = machine.disconnect() else {
            Issue.record("nothing closed")
            return
        }
        #expect(closing === connection)
        let answer = machine.takeConnackOutcome(attempt.id)
        #expect(answer == .connectionClosed(reason: nil), "the wait ends now, not at its timeout")
        let change = machine.disconnected(at: start)
        #expect(change?.state == .disconnected)
        guard
            case .overtaken(let error, false, [1], nil) = finish(
                &machine, attempt.id, outcome: .connectionClosed(reason: nil), at: start)
        else {
            Issue.record("not overtaken")
            return
        }
        #expect(error.code == "OperationCancelled")
        #expect(machine.phase == .disconnected)
    }

    @Test func disconnectAfterTheConnackStillWinsOverTheAttempt() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        let connection = try begin(&machine, attempt.id, at: start)
        machine.connackReceived(returnCode: 0)
        _ = machine.disconnect()
        let (cleanup, result) = machine.settle(
            attempt.id, outcome: .accepted, connection: connection, endpoint: "hub:8883", timeout: .seconds(1))
        guard case .close(let closed) = cleanup, closed === connection else {
            Issue.record("the unwanted connection is kept: \(cleanup)")
            return
        }
        guard case .overtaken = machine.finishAttempt(attempt.id, result: result, at: start) else { return }
        #expect(machine.phase != .connected)
    }

    @Test func disconnectBeforeTheConnectGoesOutSendsNothing() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        _ = machine.beginAttempt(attempt.id, at: start) { StandInConnection() }
        _ = machine.disconnect()
        let sent = machine.expectConnack(attempt.id, renewCredentialsAt: nil)
        #expect(!sent)
    }

    @Test func aConnectAfterADisconnectWaitsForTheOvertakenAttemptToEnd() throws {
        var machine = machine()
        guard case .startAttempt(let first) = machine.connect(waiter: 1, at: start) else { return }
        try begin(&machine, first.id, at: start)
        _ = machine.disconnect()
        _ = machine.disconnected(at: start)
        guard case .joinedAttempt = machine.connect(waiter: 2, at: start) else {
            Issue.record("a second attempt while the first is still ending")
            return
        }
        #expect(machine.phase == .connecting)
        guard
            case .overtaken(_, _, [1], let next?) = finish(
                &machine, first.id, outcome: .connectionClosed(reason: nil), at: start)
        else {
            Issue.record("the queued connect does not follow")
            return
        }
        #expect(next.purpose == .connect)
        try begin(&machine, next.id, at: start)
        machine.connackReceived(returnCode: 0)
        guard case .connected(_, [2], _) = finish(&machine, next.id, outcome: .accepted, at: start) else {
            Issue.record("not connected")
            return
        }
    }

    @Test func disconnectWhileReconnectingStopsTheReconnects() throws {
        var machine = try connected()
        _ = machine.connectionEnded(requested: false, reason: nil, at: start.advanced(by: .milliseconds(10)))
        #expect(machine.reconnectDeadline != nil)
        _ = machine.disconnect()
        _ = machine.disconnected(at: start)
        #expect(machine.timersDue(at: start.advanced(by: .seconds(60))).actions.isEmpty)
        #expect(machine.phase == .disconnected)
    }

    @Test func disconnectDuringARenewalDoesNotReconnect() throws {
        var machine = try connected()
        guard case .startAttempt(let renewal, _) = machine.renewCredentials(waiter: nil, at: start) else { return }
        _ = machine.disconnect()
        guard
            case .abandon(let error) = machine.beginAttempt(
                renewal.id, at: start, makeConnection: { StandInConnection() })
        else {
            Issue.record("the renewal went on")
            return
        }
        _ = machine.disconnected(at: start)
        guard case .overtaken(_, true, [], nil) = machine.finishAttempt(renewal.id, result: .failure(error), at: start)
        else {
            Issue.record("not overtaken")
            return
        }
        #expect(machine.phase == .disconnected)
        #expect(machine.timersDue(at: start.advanced(by: .seconds(60))).actions.isEmpty)
    }

    @Test func shutdownDuringAConnectEndsItAndStaysShutDown() throws {
        var machine = machine()
        guard case .startAttempt(let attempt) = machine.connect(waiter: 1, at: start) else { return }
        try begin(&machine, attempt.id, at: start)
        _ = machine.disconnect()
        _ = machine.disconnected(at: start)
        machine.shutDown(at: start)
        let answer = machine.takeConnackOutcome(attempt.id)
        let outcome = try #require(answer)
        guard case .overtaken(_, false, [1], nil) = finish(&machine, attempt.id, outcome: outcome, at: start) else {
            Issue.record("not overtaken")
            return
        }
        #expect(machine.phase == .shutDown)
        guard case .none = machine.disconnect() else {
            Issue.record("a disconnect after shutdown did something")
            return
        }
        #expect(
            machine.operationNeedsConnection(autoConnect: true) == .fail(.clientError("the client has been shut down")))
    }

    // MARK: Operations

    @Test func operationsConnectFirstOnlyWhenAllowed() throws {
        var machine = machine()
        #expect(machine.operationNeedsConnection(autoConnect: true) == .connect)
        #expect(machine.operationNeedsConnection(autoConnect: false).isFailure)
        _ = machine.connect(waiter: 1, at: start)
        #expect(machine.operationNeedsConnection(autoConnect: false) == .connect, "a connect under way is joined")
        let connected = try self.connected()
        #expect(connected.operationNeedsConnection(autoConnect: false) == .proceed)
    }
}

extension ConnectionStateMachine.OperationAction {
    var isFailure: Bool {
        if case .fail = self { return true }
        return false
    }
}
