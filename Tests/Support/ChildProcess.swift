import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Child processes for tests, without Foundation's `Process`: with several children started and
// ended at once from different threads, `Process` sometimes misses an exit and `waitUntilExit()`
// spins forever on a zombie (the AddressSanitizer phase of CI hung on it).

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later; Swift's Glibc module does not
/// export it).
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func spawnCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32

/// Starts `path` with `args` (standard output to `stdoutFD`, or /dev/null; standard error to the file
/// `stderrPath`, or /dev/null; standard input from /dev/null), with a clean signal mask and default handlers (a child of a dispatch worker thread
/// would otherwise inherit one that blocks SIGTERM). Returns its PID; reap it with ``reapChild(_:)``.
func spawnChild(_ path: String, _ args: [String], stdoutFD: Int32? = nil, stderrPath: String? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    if let stdoutFD {
        posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1)
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    }
    posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    // Nothing else of this process's: a server holding a copy of a test's client socket would keep
    // that connection open after the test closed it.
    _ = spawnCloseFrom(&actions, 3)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attr, &empty)
    var defaults = sigset_t()
    sigfillset(&defaults)
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
    guard rc == 0 else { throw CheckFailure(message: "cannot start \(path): \(String(cString: strerror(rc)))", location: "spawnChild") }
    return pid
}

/// Waits up to `seconds` for `pid` to exit and reaps it; returns its exit status (nil if it did not
/// end in time, or someone else reaped it).
@discardableResult
func reapChild(_ pid: pid_t, seconds: Double = 10) -> Int32? {
    var status: Int32 = 0
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
        if r < 0 && errno == ECHILD { return nil }
        usleep(5_000)
    }
    return nil
}

/// Runs a program to its end (at most `seconds`; then it is killed) and returns its exit status, its
/// standard output and its standard error (kept in a temporary file, so that a test can say why a
/// program failed).
public func runProgram(_ path: String, _ args: [String], seconds: Double = 60) throws -> (status: Int32, output: String, errors: String) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw CheckFailure(message: "pipe() failed", location: "runProgram") }
    let errorsPath = NSTemporaryDirectory() + "tandem-child-\(UUID().uuidString).err"
    defer { unlink(errorsPath) }
    let pid: pid_t
    do {
        pid = try spawnChild(path, args, stdoutFD: fds[1], stderrPath: errorsPath)
    } catch {
        close(fds[0])
        close(fds[1])
        throw error
    }
    close(fds[1])
    var output: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 100) <= 0 { continue }
        let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += buf[0..<n]
    }
    close(fds[0])
    var status = reapChild(pid, seconds: max(1, deadline.timeIntervalSinceNow))
    if status == nil {
        kill(pid, SIGKILL)
        status = reapChild(pid)
    }
    return (status ?? -1, String(decoding: output, as: UTF8.self), String(decoding: readWholeFile(errorsPath), as: UTF8.self))
}

/// A file's bytes through open/read (Foundation's `String(contentsOfFile:)` leaks its read buffer,
/// which LeakSanitizer reports); empty when it cannot be read.
private func readWholeFile(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return out }
        out += buf[0..<n]
    }
}
