import ArgumentParser
import Foundation
import Synchronization
import Tandem

@main
struct TandemCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem",
        abstract: "Tandem: Django-style caches and upstream calls for Swift servers, blocking and async.",
        subcommands: [Demo.self, Get.self, SetValue.self, GetOrSet.self, Delete.self, Incr.self, FanOutCommand.self])
}

/// Which cache a command talks to.
struct CacheChoice: ParsableArguments {
    @Option(help: "A cache URL: locmem://name, dummy://, redis://host:port/db, memcached://host:port,...")
    var url: String?

    @Option(help: "A JSON file in Django's CACHES shape.")
    var settings: String?

    @Option(help: "The alias to use from --settings.")
    var alias: String = "default"

    func cache() throws -> Cache {
        if let url {
            return try Caches(settings: ["default": try CacheSettings(url: url)]).default
        }
        if let settings {
            let data = try Data(contentsOf: URL(fileURLWithPath: settings))
            return try Caches(json: data)[alias]
        }
        return try Caches.fromEnvironment()[alias]
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the value of KEY (exit 1 when missing).",
        discussion: "With SERIALIZER \"django\", a value with a JSON form (str, int, float, bool, None, list, tuple, dict with str keys) prints as JSON text, any other as Python's repr.")
    @Argument var key: String
    @OptionGroup var choice: CacheChoice

    func run() async throws {
        let cache = try choice.cache()
        if cache.serializer == .django {
            guard let value: PythonValue = try await cache.async.get(key) else {
                FileHandle.standardError.write(Data("(missing)\n".utf8))
                throw ExitCode(1)
            }
            print(value.jsonText ?? value.description)
            return
        }
        guard let bytes: [UInt8] = try await cache.async.get(key) else {
            FileHandle.standardError.write(Data("(missing)\n".utf8))
            throw ExitCode(1)
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            print(text)
        } else {
            print(bytes.map { String(format: "%02x", $0) }.joined())
        }
    }
}

struct GetOrSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-or-set",
        abstract: "Print KEY's value; when it is missing, compute VALUE (taking --produce-ms) and store it. Prints 'computed VALUE' or 'cached VALUE'.")
    @Argument var key: String
    @Argument var value: String
    @Option(help: "How long computing the value takes, in milliseconds.")
    var produceMs: Int = 0
    @Flag(help: "Take a stampede lock in the cache first, so that several processes compute the value once.")
    var lock = false
    @OptionGroup var choice: CacheChoice

    func run() async throws {
        let cache = try choice.cache()
        let computed = Mutex(false)
        let (value, produceMs) = (value, produceMs)
        let got: String = try await cache.async.getOrSet(key, lock: lock ? true : nil) {
            try await Task.sleep(for: .milliseconds(produceMs))
            computed.locked { $0 = true }
            return value
        }
        print("\(computed.locked { $0 } ? "computed" : "cached") \(got)")
    }
}

struct SetValue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Store VALUE (text; integers as integers) under KEY.")
    @Argument var key: String
    @Argument var value: String
    @Option(help: "Timeout in seconds (default: the cache's TIMEOUT; 'never' for no expiry).")
    var timeout: String?
    @Flag(help: "VALUE is JSON: stored as the Python values it reads as (objects as dicts, arrays as lists; SERIALIZER \"django\").")
    var json = false
    @OptionGroup var choice: CacheChoice

    func run() async throws {
        let cache = try choice.cache()
        let t: CacheTimeout
        switch timeout {
        case nil: t = .default
        case "never"?: t = .never
        case let s?:
            guard let d = Double(s) else { throw ValidationError("--timeout must be seconds or 'never', got '\(s)'") }
            t = .seconds(d)
        }
        if json {
            let parsed: PythonValue
            do {
                parsed = try JSONDecoder().decode(PythonValue.self, from: Data(value.utf8))
            } catch {
                throw ValidationError("VALUE is not JSON: \(error)")
            }
            try await cache.async.set(key, parsed, timeout: t)
        } else if let i = Int(value) {
            try await cache.async.set(key, i, timeout: t)
        } else {
            try await cache.async.set(key, value, timeout: t)
        }
        print("stored \(key)")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete KEY (exit 1 when it did not exist).")
    @Argument var key: String
    @OptionGroup var choice: CacheChoice

    func run() async throws {
        let existed = try await choice.cache().async.delete(key)
        print(existed ? "deleted \(key)" : "\(key) did not exist")
        if !existed { throw ExitCode(1) }
    }
}

struct Incr: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add to the integer under KEY and print the result.")
    @Argument var key: String
    @Option(help: "The amount to add (negative to subtract).")
    var by: Int = 1
    @OptionGroup var choice: CacheChoice

    func run() async throws {
        print(try await choice.cache().async.incr(key, by: by))
    }
}

struct FanOutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout", abstract: "GET every URL at once and print each result in order, with the wall time.")
    @Argument(help: "The URLs.") var urls: [String]
    @Option(help: "Cancel what is still running after this many milliseconds.") var deadline: Int?
    @Option(help: "At most this many requests at once.") var limit: Int?

    func run() async throws {
        let http = UpstreamClient()
        let clock = ContinuousClock()
        let start = clock.now
        let results = await http.async.fanOut(urls.map { UpstreamRequest(.get, $0) }, deadline: deadline.map { .milliseconds($0) }, limit: limit)
        let wall = clock.now - start
        var failed = false
        for (url, r) in zip(urls, results) {
            switch r {
            case .success(let response):
                print("\(response.status)  \(response.body.count) bytes  \(milliseconds(response.timings.total))  \(url)")
            case .failure(let e):
                failed = true
                print("ERR  \(e)")
            }
        }
        print("wall time \(milliseconds(wall)) for \(urls.count) requests")
        await http.shutdown()
        if failed { throw ExitCode(1) }
    }
}
