/// A Redis command in RESP (an array of bulk strings, binary-safe), for tests that talk to a server
/// or play one: the one encoder the test targets share.
public enum RESPCommand {
    /// The command whose arguments are `args`' bytes.
    public static func encode(_ args: [[UInt8]]) -> [UInt8] {
        var out = Array("*\(args.count)\r\n".utf8)
        for a in args { out += Array("$\(a.count)\r\n".utf8) + a + Array("\r\n".utf8) }
        return out
    }

    /// The command whose arguments are `args` as UTF-8.
    public static func encode(_ args: [String]) -> [UInt8] { encode(args.map { Array($0.utf8) }) }
}
