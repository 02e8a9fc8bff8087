import Testing
import TandemCache
import TandemTestSupport

/// Django's cache behaviours against LocMem and Dummy, in both faces.
@Suite struct LocMemSemantics {
    @Test("LocMem", arguments: SemanticSuite.names, FaceKind.allCases)
    func behaviour(_ name: String, _ face: FaceKind) async throws {
        try await SemanticSuite.run(name, fixture: LocMemFixture(), face: face)
    }
}

@Suite struct DummySemantics {
    @Test("Dummy", arguments: SemanticSuite.names, FaceKind.allCases)
    func behaviour(_ name: String, _ face: FaceKind) async throws {
        try await SemanticSuite.run(name, fixture: DummyFixture(), face: face)
    }
}

@Test func suiteHasAtLeast35Behaviours() {
    #expect(SemanticSuite.names.count >= 35)
    #expect(Set(SemanticSuite.names).count == SemanticSuite.names.count, "behaviour names are unique")
}
