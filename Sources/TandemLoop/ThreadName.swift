import CTandemSys

/// Names the calling thread for debuggers, `top -H`, perf and `/proc` (Linux keeps 15 bytes; the
/// name is cut there, at a character boundary).
package func setCurrentThreadName(_ name: String) {
    var osName = Array(name.utf8.prefix(15))
    while !osName.isEmpty, String(validating: osName, as: UTF8.self) == nil { osName.removeLast() }
    _ = ctandemsys_set_thread_name(String(decoding: osName, as: UTF8.self))
}
