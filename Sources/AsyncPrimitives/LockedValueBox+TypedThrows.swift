package import NIOConcurrencyHelpers

extension NIOLockedValueBox {
    /// `withLockedValue` for closures with a typed error, so callers keep the error's type.
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure)
        -> Result
    {
        let outcome: Swift.Result<Result, Failure> = withLockedValue { value in
            Swift.Result { () throws(Failure) -> Result in try body(&value) }
        }
        return try outcome.get()
    }
}
