package contextref

// NonPublicForTest lets the external tests check the address classes.
var NonPublicForTest = nonPublic
